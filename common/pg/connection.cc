#include "common/pg/connection.h"

#include <libpq-fe.h>
#include <poll.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace aijobs::pg {

Params& Params::Add(std::string value) {
  values_.push_back(std::move(value));
  formats_.push_back(0);
  null_.push_back(false);
  return *this;
}

Params& Params::Add(int64_t value) { return Add(absl::StrCat(value)); }

Params& Params::AddBinary(std::string bytes) {
  values_.push_back(std::move(bytes));
  formats_.push_back(1);
  null_.push_back(false);
  return *this;
}

Params& Params::AddNull() {
  values_.emplace_back();
  formats_.push_back(0);
  null_.push_back(true);
  return *this;
}

Params& Params::AddOptional(const std::optional<std::string>& value) {
  return value ? Add(*value) : AddNull();
}

void Result::Deleter::operator()(pg_result* r) const { PQclear(r); }

Result::Result(pg_result* result) : result_(result) {}

int Result::rows() const { return PQntuples(result_.get()); }
int Result::columns() const { return PQnfields(result_.get()); }
bool Result::IsNull(int row, int col) const { return PQgetisnull(result_.get(), row, col); }

std::string_view Result::Get(int row, int col) const {
  return std::string_view(PQgetvalue(result_.get(), row, col),
                          PQgetlength(result_.get(), row, col));
}

int64_t Result::GetInt(int row, int col) const {
  return std::strtoll(PQgetvalue(result_.get(), row, col), nullptr, 10);
}

bool Result::GetBool(int row, int col) const { return Get(row, col) == "t"; }

std::string Result::GetBytea(int row, int col) const {
  std::string_view text = Get(row, col);
  if (text.size() < 2 || text[0] != '\\' || text[1] != 'x') return std::string(text);
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return c - 'A' + 10;
  };
  std::string out((text.size() - 2) / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<char>((nibble(text[2 + 2 * i]) << 4) | nibble(text[3 + 2 * i]));
  }
  return out;
}

int64_t Result::affected_rows() const {
  return std::strtoll(PQcmdTuples(result_.get()), nullptr, 10);
}

absl::StatusCode CodeForSqlState(std::string_view sqlstate) {
  // https://www.postgresql.org/docs/15/errcodes-appendix.html
  std::string_view cls = sqlstate.substr(0, 2);
  if (sqlstate == "23505") return absl::StatusCode::kAlreadyExists;
  if (sqlstate == "40001" || sqlstate == "40P01") return absl::StatusCode::kAborted;
  if (sqlstate == "57014") return absl::StatusCode::kDeadlineExceeded;
  // Connection lost, server shutting down or starting, or out of a resource (disk, memory,
  // connection slots): the same statement may well succeed later.
  if (cls == "08" || cls == "53" || sqlstate == "57P01" || sqlstate == "57P02" ||
      sqlstate == "57P03") {
    return absl::StatusCode::kUnavailable;
  }
  // A program limit (statement too complex, too many columns...): retrying will not help.
  if (cls == "54") return absl::StatusCode::kFailedPrecondition;
  if (cls == "22" || cls == "23") return absl::StatusCode::kInvalidArgument;
  return absl::StatusCode::kInternal;
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(const std::string& conninfo,
                                                             int statement_timeout_ms,
                                                             bool synchronous_commit,
                                                             bool transaction_pooler) {
  // Our defaults first: the expanded conninfo (dbname, expand_dbname = 1) comes after them
  // and overrides any it sets.
  const char* const keywords[] = {"connect_timeout", "tcp_user_timeout", "keepalives",
                                  "keepalives_idle", "keepalives_interval", "keepalives_count",
                                  "dbname", nullptr};
  const char* const values[] = {"5", "20000", "1", "10", "3", "3", conninfo.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keywords, values, /*expand_dbname=*/1);
  if (conn == nullptr) return absl::ResourceExhaustedError("libpq could not allocate");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(conn);
    PQfinish(conn);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    return absl::UnavailableError(absl::StrCat("cannot connect to PostgreSQL: ", msg));
  }
  auto c = std::unique_ptr<Connection>(new Connection(conn));
  c->transaction_pooler_ = transaction_pooler;
  if (transaction_pooler) return c;
  auto r = c->Exec(absl::StrCat("SET statement_timeout = ", statement_timeout_ms,
                                "; SET synchronous_commit = ", synchronous_commit ? "on" : "off",
                                "; SET client_min_messages = warning"));
  if (!r.ok()) return r.status();
  return c;
}

Connection::~Connection() { PQfinish(conn_); }

std::string Connection::Option(std::string_view keyword) const {
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> options(PQconninfo(conn_),
                                                                         &PQconninfoFree);
  for (PQconninfoOption* o = options.get(); o != nullptr && o->keyword != nullptr; ++o) {
    if (keyword == o->keyword) return o->val != nullptr ? o->val : "";
  }
  return "";
}

absl::StatusOr<Result> Connection::Check(PGresult* raw) {
  Result result(raw);
  if (raw == nullptr) {
    return absl::UnavailableError(absl::StrCat("PostgreSQL: ", PQerrorMessage(conn_)));
  }
  ExecStatusType st = PQresultStatus(raw);
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
    return result;
  }
  const char* sqlstate = PQresultErrorField(raw, PG_DIAG_SQLSTATE);
  std::string msg = PQresultErrorMessage(raw);
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  absl::StatusCode code = sqlstate != nullptr                ? CodeForSqlState(sqlstate)
                          : PQstatus(conn_) != CONNECTION_OK ? absl::StatusCode::kUnavailable
                                                             : absl::StatusCode::kInternal;
  return absl::Status(code, absl::StrCat("PostgreSQL: ", msg));
}

absl::StatusOr<Result> Connection::Exec(std::string_view sql) {
  std::string s(sql);
  return Check(PQexec(conn_, s.c_str()));
}

namespace {
struct RawParams {
  std::vector<const char*> values;
  std::vector<int> lengths;
};
}  // namespace

absl::StatusOr<Result> Connection::ExecParams(std::string_view sql, const Params& params) {
  RawParams raw;
  for (int i = 0; i < params.size(); ++i) {
    raw.values.push_back(params.null_[i] ? nullptr : params.values_[i].data());
    raw.lengths.push_back(static_cast<int>(params.values_[i].size()));
  }
  std::string s(sql);
  return Check(PQexecParams(conn_, s.c_str(), params.size(), nullptr, raw.values.data(),
                            raw.lengths.data(), params.formats_.data(), 0));
}

absl::StatusOr<Result> Connection::ExecPrepared(const std::string& name, std::string_view sql,
                                                const Params& params) {
  if (transaction_pooler_) return ExecParams(sql, params);
  if (prepared_.count(name) == 0) {
    std::string s(sql);
    auto r = Check(PQprepare(conn_, name.c_str(), s.c_str(), 0, nullptr));
    if (!r.ok()) return r.status();
    prepared_.insert(name);
  }
  RawParams raw;
  for (int i = 0; i < params.size(); ++i) {
    raw.values.push_back(params.null_[i] ? nullptr : params.values_[i].data());
    raw.lengths.push_back(static_cast<int>(params.values_[i].size()));
  }
  return Check(PQexecPrepared(conn_, name.c_str(), params.size(), raw.values.data(),
                              raw.lengths.data(), params.formats_.data(), 0));
}

bool Connection::healthy() const { return PQstatus(conn_) == CONNECTION_OK; }

bool Connection::IdleSessionAlive() {
  if (PQstatus(conn_) != CONNECTION_OK) return false;
  pollfd pfd{PQsocket(conn_), POLLIN, 0};
  int n = poll(&pfd, 1, 0);
  if (n == 0) return true;
  // Readable (or an error) while no statement runs: EOF, or an error the server sent before
  // closing. Pool sessions do not LISTEN, so nothing else is expected here.
  return false;
}

int Connection::socket() const { return PQsocket(conn_); }

absl::StatusOr<std::vector<Connection::Notification>> Connection::ConsumeNotifications() {
  if (PQconsumeInput(conn_) == 0) {
    return absl::UnavailableError(absl::StrCat("PostgreSQL: ", PQerrorMessage(conn_)));
  }
  std::vector<Notification> out;
  while (PGnotify* n = PQnotifies(conn_)) {
    out.push_back({n->relname, n->extra != nullptr ? n->extra : ""});
    PQfreemem(n);
  }
  return out;
}

}  // namespace aijobs::pg
