// Thin RAII wrappers over libpq: a Connection, the Result of a statement, and Params.
// This folder is the only code that includes libpq-fe.h.
//
//   ASSIGN_OR_RETURN(auto conn, pg::Connection::Open("host=127.0.0.1 port=5432 dbname=aijobs"));
//   pg::Params p; p.Add("QUEUED");
//   absl::StatusOr<pg::Result> r = conn->ExecPrepared("count_state", "SELECT ...", p);
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct pg_conn;
struct pg_result;

namespace aijobs::pg {

// Statement parameters. Text parameters are passed as text; Binary ones (bytea) as raw
// bytes, so no escaping happens on the hot path.
class Params {
 public:
  Params& Add(std::string value);
  Params& Add(int64_t value);
  Params& AddBinary(std::string bytes);
  Params& AddNull();
  // Adds `value` if set, NULL otherwise.
  Params& AddOptional(const std::optional<std::string>& value);

  int size() const { return static_cast<int>(values_.size()); }

 private:
  friend class Connection;
  std::vector<std::string> values_;
  std::vector<int> formats_;
  std::vector<bool> null_;
};

// The rows of a successful statement, in text format.
class Result {
 public:
  explicit Result(pg_result* result);
  Result(Result&&) noexcept = default;
  Result& operator=(Result&&) noexcept = default;

  int rows() const;
  int columns() const;
  bool IsNull(int row, int col) const;
  std::string_view Get(int row, int col) const;
  std::string GetString(int row, int col) const { return std::string(Get(row, col)); }
  int64_t GetInt(int row, int col) const;
  bool GetBool(int row, int col) const;
  // Decodes a bytea column (hex output format) to raw bytes.
  std::string GetBytea(int row, int col) const;
  // Number of rows a command touched (UPDATE/DELETE/INSERT without RETURNING).
  int64_t affected_rows() const;

 private:
  struct Deleter {
    void operator()(pg_result* r) const;
  };
  std::unique_ptr<pg_result, Deleter> result_;
};

// Maps a failed statement's SQLSTATE to a status code by what the caller should do:
// 23505 ALREADY_EXISTS; 40001/40P01 ABORTED (retry the transaction); class 08, class 53 and
// 57P01/57P02/57P03 UNAVAILABLE (retry later); 57014 DEADLINE_EXCEEDED; class 54
// FAILED_PRECONDITION (a program limit: don't retry); 22xxx/other 23xxx INVALID_ARGUMENT;
// anything else INTERNAL.
absl::StatusCode CodeForSqlState(std::string_view sqlstate);

// One database session. Not thread-safe: use one per thread, or take them from a Pool.
class Connection {
 public:
  // Connects with a libpq conninfo string or URL; UNAVAILABLE when the server can't be
  // reached. Every statement runs with `statement_timeout_ms` (0 = none). Unless the
  // conninfo sets them, a lost network is noticed in seconds rather than by TCP's default
  // retransmission timeout (about 15 minutes, during which a statement would hang): connect
  // gives up after 5 s (connect_timeout), data unacknowledged for 20 s breaks the connection
  // (tcp_user_timeout), and an idle connection is probed after 10 s (keepalives). With
  // `synchronous_commit` false, commits return before their WAL is flushed: only for writes
  // that may be lost in a database crash without breaking a promise (see PgJobStore).
  //
  // `transaction_pooler`: the conninfo points at a transaction-pooling PgBouncer, whose
  // clients share server sessions between transactions. Then nothing is set on the session
  // (a SET would leak to other clients' transactions: the server defaults apply, so commits
  // are synchronous whatever `synchronous_commit` says) and ExecPrepared runs as ExecParams
  // (named prepared statements do not survive a change of server session).
  static absl::StatusOr<std::unique_ptr<Connection>> Open(const std::string& conninfo,
                                                          int statement_timeout_ms = 30000,
                                                          bool synchronous_commit = true,
                                                          bool transaction_pooler = false);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // The value libpq uses for connection parameter `keyword` ("" when unset).
  std::string Option(std::string_view keyword) const;

  // Runs one or more statements without parameters.
  absl::StatusOr<Result> Exec(std::string_view sql);
  // Runs `sql` with parameters ($1, $2 ...).
  absl::StatusOr<Result> ExecParams(std::string_view sql, const Params& params);
  // Runs the statement prepared under `name`, preparing `sql` on first use on this
  // connection.
  absl::StatusOr<Result> ExecPrepared(const std::string& name, std::string_view sql,
                                      const Params& params);

  // True while the session is usable; a pool drops connections that are not.
  bool healthy() const;
  // For an idle session: false when it is known to be dead without a round trip — the
  // server closed it or sent something unasked (a restarted or shut-down server sends
  // FATAL 57P01 and closes). A pool checks this before lending an idle connection.
  bool IdleSessionAlive();
  // The socket, for waiting on notifications.
  int socket() const;
  struct Notification {
    std::string channel;
    std::string payload;
  };
  // Reads pending input and returns the NOTIFY messages received.
  absl::StatusOr<std::vector<Notification>> ConsumeNotifications();

 private:
  explicit Connection(pg_conn* conn) : conn_(conn) {}
  absl::StatusOr<Result> Check(pg_result* result);

  pg_conn* conn_;
  std::unordered_set<std::string> prepared_;
  bool transaction_pooler_ = false;
};

}  // namespace aijobs::pg
