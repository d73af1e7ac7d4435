// End-to-end: identity and tenancy (issue 12) with the real binaries — two scheduler replicas
// with --auth=on on one PostgreSQL, sim workers, aijobsctl and the gateway. JWTs of each
// algorithm accepted and refused, key rotation without a failed request, cross-tenant and
// cross-user NOT_FOUND over gRPC and HTTP, public job types for anonymous callers, API keys
// created, used and revoked across replicas, worker versus client credentials, and no secret
// in any log.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "aijobs/v1/admin_service.grpc.pb.h"
#include "common/auth/jwt.h"
#include "common/auth/testing/test_keys.h"
#include "tests/e2e_cluster.h"
#include "tests/fixtures/http_client.h"

namespace aijobs::testing {
namespace {

using aijobs::auth::JwtAlg;
using aijobs::auth::TestKeyPair;
using aijobs::auth::TestKeyType;
using aijobs::v1::Job;
using google::protobuf::Struct;

constexpr char kIssuer[] = "https://idp.test";
constexpr char kAudience[] = "aijobs";

struct Claims {
  std::string sub;
  std::string tenant;
  std::vector<std::string> roles;
  std::vector<std::string> job_types;
  absl::Duration ttl = absl::Minutes(10);
  std::string audience = kAudience;
};

Claims Who(std::string sub, std::string tenant = "", std::vector<std::string> roles = {},
           std::vector<std::string> job_types = {}) {
  Claims c;
  c.sub = std::move(sub);
  c.tenant = std::move(tenant);
  c.roles = std::move(roles);
  c.job_types = std::move(job_types);
  return c;
}

Struct ClaimsStruct(const Claims& c) {
  Struct s;
  auto& f = *s.mutable_fields();
  const absl::Time now = absl::Now();
  f["sub"].set_string_value(c.sub);
  if (!c.tenant.empty()) f["tenant"].set_string_value(c.tenant);
  f["iss"].set_string_value(kIssuer);
  f["aud"].set_string_value(c.audience);
  f["iat"].set_number_value(static_cast<double>(absl::ToUnixSeconds(now)));
  f["exp"].set_number_value(static_cast<double>(absl::ToUnixSeconds(now + c.ttl)));
  for (const auto& r : c.roles) f["roles"].mutable_list_value()->add_values()->set_string_value(r);
  for (const auto& t : c.job_types) {
    f["job_types"].mutable_list_value()->add_values()->set_string_value(t);
  }
  return s;
}

class AuthE2eTest : public E2eTest {
 protected:
  void SetUp() override {
    E2eTest::SetUp();
    dir_ = absl::StrCat(LogDir(), "/auth-", ::testing::UnitTest::GetInstance()->random_seed(), "-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_EQ(system(absl::StrCat("mkdir -p '", dir_, "'").c_str()), 0);
    keys_path_ = dir_ + "/jwks.json";
    rsa_ = aijobs::auth::GenerateTestKey(TestKeyType::kRsa);
    ec_ = aijobs::auth::GenerateTestKey(TestKeyType::kEc);
    WriteKeys({"h1"});
  }

  // The JWKS holds the HS256 secrets named by `hmac_kids` plus the RSA and EC public keys.
  // Written to a new file renamed over the old one, as a secret mount or a deploy does.
  void WriteKeys(const std::vector<std::string>& hmac_kids) {
    std::string keys;
    for (const auto& kid : hmac_kids) {
      absl::StrAppend(&keys, R"({"kty":"oct","alg":"HS256","kid":")", kid, R"(","k":")",
                      aijobs::auth::Base64Url(Secret(kid)), R"("},)");
    }
    absl::StrAppend(&keys, aijobs::auth::PublicJwk(rsa_, "r1"), ",",
                    aijobs::auth::PublicJwk(ec_, "e1"));
    const std::string tmp = keys_path_ + ".tmp";
    std::ofstream(tmp) << R"({"keys":[)" << keys << "]}";
    ASSERT_EQ(std::rename(tmp.c_str(), keys_path_.c_str()), 0);
  }

  static std::string Secret(const std::string& kid) {
    return "secret-of-" + kid + "-0123456789abcdef0123456789";
  }

  std::string Hs256(const Claims& c, const std::string& kid = "h1") {
    auto t = aijobs::auth::SignJwt(ClaimsStruct(c), JwtAlg::kHS256, Secret(kid), kid);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.value_or("");
  }
  std::string Rs256(const Claims& c) {
    return aijobs::auth::SignJwt(ClaimsStruct(c), JwtAlg::kRS256, rsa_.private_pem, "r1").value();
  }
  std::string Es256(const Claims& c) {
    return aijobs::auth::SignJwt(ClaimsStruct(c), JwtAlg::kES256, ec_.private_pem, "e1").value();
  }

  std::vector<std::string> AuthFlags() {
    return {"--auth=on", "--jwt_keys",       keys_path_, "--jwt_issuer",
            kIssuer,     "--jwt_audience",   kAudience,  "--public_job_types",
            "chat",      "--auth_reload_ms", "200"};
  }

  std::string WorkerToken(const std::vector<std::string>& types = {}) {
    return Hs256(Who("worker-fleet", "", {"worker"}, types));
  }

  // Starts a scheduler with authentication on and a worker with a worker credential.
  void StartAuthedCluster() {
    ASSERT_NO_FATAL_FAILURE(StartScheduler(AuthFlags()));
    ASSERT_NE(StartWorker("w1", {"--token", WorkerToken()}), nullptr);
  }

  static void WithToken(grpc::ClientContext* ctx, const std::string& token) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
  }

  grpc::Status SubmitAs(const std::string& token, const v1::SubmitJobRequest& req, Job* job,
                        v1::JobService::Stub* stub = nullptr) {
    grpc::ClientContext ctx;
    WithToken(&ctx, token);
    return (stub ? stub : this->stub())->SubmitJob(&ctx, req, job);
  }
  grpc::Status GetAs(const std::string& token, const std::string& id, Job* job,
                     v1::JobService::Stub* stub = nullptr) {
    grpc::ClientContext ctx;
    WithToken(&ctx, token);
    v1::GetJobRequest req;
    req.set_job_id(id);
    return (stub ? stub : this->stub())->GetJob(&ctx, req, job);
  }
  grpc::Status CancelAs(const std::string& token, const std::string& id) {
    grpc::ClientContext ctx;
    WithToken(&ctx, token);
    v1::CancelJobRequest req;
    req.set_job_id(id);
    Job job;
    return stub()->CancelJob(&ctx, req, &job);
  }
  grpc::Status RetryAs(const std::string& token, const std::string& id) {
    grpc::ClientContext ctx;
    WithToken(&ctx, token);
    v1::RetryJobRequest req;
    req.set_job_id(id);
    Job job;
    return stub()->RetryJob(&ctx, req, &job);
  }
  absl::StatusOr<std::vector<Job>> ListAs(const std::string& token) {
    grpc::ClientContext ctx;
    WithToken(&ctx, token);
    v1::ListJobsRequest req;
    req.set_page_size(1000);
    v1::ListJobsResponse resp;
    grpc::Status s = stub()->ListJobs(&ctx, req, &resp);
    if (!s.ok())
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    return std::vector<Job>(resp.jobs().begin(), resp.jobs().end());
  }
  // Watches to the end as `token`; the stream's status.
  grpc::Status WatchAs(const std::string& token, const std::string& id, int* events) {
    grpc::ClientContext ctx;
    WithToken(&ctx, token);
    v1::WatchJobRequest req;
    req.set_job_id(id);
    auto reader = stub()->WatchJob(&ctx, req);
    v1::JobEvent e;
    *events = 0;
    while (reader->Read(&e)) ++*events;
    return reader->Finish();
  }

  absl::StatusOr<Job> WaitSucceeded(const std::string& token, const std::string& id) {
    Job job;
    bool done = WaitFor([&] { return GetAs(token, id, &job).ok() && job.state() == v1::SUCCEEDED; },
                        absl::Seconds(30), absl::Milliseconds(50));
    if (!done) return absl::DeadlineExceededError(absl::StrCat("job ", id, " did not succeed"));
    return job;
  }

  std::string dir_;
  std::string keys_path_;
  int gateway_port_for_tls_ = 0;
  TestKeyPair rsa_, ec_;
};

TEST_F(AuthE2eTest, TokensOfEachKindAreAcceptedAndBadOnesRefusedWithTheReason) {
  ASSERT_NO_FATAL_FAILURE(StartAuthedCluster());
  const Claims alice = Who("alice", "t1");
  for (const std::string& token :
       {Hs256(alice), Rs256(alice), Es256(alice),
        aijobs::auth::SignJwtWithOpenSsl(rsa_, "r1", ClaimsStruct(alice)),
        aijobs::auth::SignJwtWithOpenSsl(ec_, "e1", ClaimsStruct(alice))}) {
    Job job;
    grpc::Status s = SubmitAs(token, ChatRequest("hello", R"({"tokens": 3})"), &job);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(job.tenant_id(), "t1");
    EXPECT_EQ(job.owner(), "alice");
  }
  Claims expired = alice;
  expired.ttl = -absl::Minutes(5);
  Claims wrong_aud = alice;
  wrong_aud.audience = "someone-else";
  const std::string good = Hs256(alice);
  const std::string header_none = aijobs::auth::Base64Url(R"({"alg":"none","typ":"JWT"})");
  const std::string body = good.substr(good.find('.') + 1, good.rfind('.') - good.find('.') - 1);
  // HS256 "signed" with the RSA public key as the secret: the algorithm-confusion attack.
  const std::string confused =
      aijobs::auth::SignJwt(ClaimsStruct(alice), JwtAlg::kHS256, rsa_.public_pem, "r1").value();
  struct Refused {
    std::string token;
    std::string why;
  };
  for (const Refused& r : std::vector<Refused>{
           {Hs256(expired), "token expired"},
           {Hs256(wrong_aud), "wrong audience"},
           {good.substr(0, good.size() - 3) + "AAA", "bad signature"},
           {aijobs::auth::SignJwt(ClaimsStruct(alice), JwtAlg::kHS256, Secret("h9"), "h9").value(),
            "unknown kid \"h9\""},
           {absl::StrCat(header_none, ".", body, "."), "alg none is not accepted"},
           {confused, "key \"r1\" is not for HS256"},
           {"aij_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "unknown or revoked API key"},
       }) {
    Job job;
    grpc::Status s = SubmitAs(r.token, ChatRequest("hello"), &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << r.why;
    EXPECT_TRUE(absl::StrContains(s.error_message(), r.why)) << s.error_message();
  }
  // A header that is not "Bearer ..." at all.
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Basic YWxpY2U6cHc=");
  Job job;
  EXPECT_EQ(stub()->SubmitJob(&ctx, ChatRequest("x"), &job).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(AuthE2eTest, JobsAreScopedToTenantAndOwner) {
  ASSERT_NO_FATAL_FAILURE(StartAuthedCluster());
  const std::string alice = Hs256(Who("alice", "t1"));
  const std::string bob = Hs256(Who("bob", "t1"));
  const std::string mallory = Hs256(Who("alice", "t2"));  // same sub, other tenant
  const std::string admin1 = Hs256(Who("ops", "t1", {"admin"}));
  v1::SubmitJobRequest req = ChatRequest("alice's secret question", R"({"tokens": 3})");
  req.set_idempotency_key("k-1");
  Job job;
  ASSERT_TRUE(SubmitAs(alice, req, &job).ok());
  ASSERT_TRUE(WaitSucceeded(alice, job.id()).ok());

  Job seen;
  for (const std::string* other : {&bob, &mallory}) {
    grpc::Status s = GetAs(*other, job.id(), &seen);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(s.error_message(), absl::StrCat("job ", job.id(), " not found"));
    int events = 0;
    EXPECT_EQ(WatchAs(*other, job.id(), &events).error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(events, 0);
    EXPECT_EQ(CancelAs(*other, job.id()).error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(RetryAs(*other, job.id()).error_code(), grpc::StatusCode::NOT_FOUND);
    auto listed = ListAs(*other);
    ASSERT_TRUE(listed.ok()) << listed.status();
    for (const Job& j : *listed) EXPECT_NE(j.id(), job.id());
    // The same idempotency key is another caller's own: a new job, never alice's.
    Job mine;
    ASSERT_TRUE(SubmitAs(*other, req, &mine).ok());
    EXPECT_NE(mine.id(), job.id());
    EXPECT_FALSE(mine.owner() == "alice" && mine.tenant_id() == "t1");
  }
  // Alice, and her tenant's admin, see it.
  ASSERT_TRUE(GetAs(alice, job.id(), &seen).ok());
  ASSERT_TRUE(GetAs(admin1, job.id(), &seen).ok());
  auto admin_list = ListAs(admin1);
  ASSERT_TRUE(admin_list.ok());
  int alice_jobs = 0, bob_jobs = 0;
  for (const Job& j : *admin_list) {
    alice_jobs += j.owner() == "alice";
    bob_jobs += j.owner() == "bob";
    EXPECT_EQ(j.tenant_id(), "t1");
  }
  EXPECT_EQ(alice_jobs, 1);
  EXPECT_EQ(bob_jobs, 1);
  // Writing the response cache needs the admin role.
  v1::PutCachedResultRequest put;
  put.set_type("chat");
  *put.mutable_input() = req.input();
  (*put.mutable_result()->mutable_fields())["text"].set_string_value("planted");
  put.mutable_ttl()->set_seconds(60);
  for (const auto& [token, code] : std::vector<std::pair<std::string, grpc::StatusCode>>{
           {alice, grpc::StatusCode::PERMISSION_DENIED},
           {"", grpc::StatusCode::UNAUTHENTICATED},
           {admin1, grpc::StatusCode::OK}}) {
    grpc::ClientContext ctx;
    WithToken(&ctx, token);
    v1::PutCachedResultResponse resp;
    EXPECT_EQ(stub()->PutCachedResult(&ctx, put, &resp).error_code(), code);
  }
}

TEST_F(AuthE2eTest, AnonymousCallersUseOnlyPublicTypesAndTheirOwnJobs) {
  ASSERT_NO_FATAL_FAILURE(StartAuthedCluster());
  Job anon_job;
  ASSERT_TRUE(SubmitAs("", ChatRequest("public question", R"({"tokens": 3})"), &anon_job).ok());
  EXPECT_EQ(anon_job.owner(), "");
  ASSERT_TRUE(WaitSucceeded("", anon_job.id()).ok());
  int events = 0;
  EXPECT_TRUE(WatchAs("", anon_job.id(), &events).ok());
  EXPECT_GT(events, 1);
  // embed is not public.
  v1::SubmitJobRequest embed = RequestFromJson(R"({"type":"embed","input":{"texts":["a"]}})");
  Job job;
  grpc::Status s = SubmitAs("", embed, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "needs a credential")) << s.error_message();
  EXPECT_EQ(ListAs("").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(RetryAs("", anon_job.id()).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // A job submitted with a credential is never readable anonymously.
  const std::string carol = Hs256(Who("carol"));
  Job carols;
  ASSERT_TRUE(SubmitAs(carol, ChatRequest("signed in", R"({"tokens": 3})"), &carols).ok());
  EXPECT_EQ(carols.tenant_id(), "default");  // no tenant claim: --default_tenant
  EXPECT_EQ(GetAs("", carols.id(), &job).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(CancelAs("", carols.id()).error_code(), grpc::StatusCode::NOT_FOUND);
  // ... and an anonymous job is not carol's.
  EXPECT_EQ(GetAs(carol, anon_job.id(), &job).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(AuthE2eTest, WorkerAndClientCredentialsAreSeparate) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler(AuthFlags()));
  const std::string user = Hs256(Who("alice"));
  // A worker without a credential, with a client's, and with a worker credential that does
  // not allow one of the types it offers: all refused, and they get no job.
  Process* none = StartWorker("w-none", {});
  Process* client = StartWorker("w-client", {"--token", user});
  Process* narrow = StartWorker("w-narrow", {"--token", WorkerToken({"embed"})});
  ASSERT_NE(none, nullptr);
  ASSERT_NE(client, nullptr);
  ASSERT_NE(narrow, nullptr);
  for (const char* why : {"WorkerService.Connect needs a worker credential",
                          "a client credential cannot open WorkerService.Connect",
                          "may not serve job type \"chat\""}) {
    EXPECT_TRUE(WaitFor([&] { return absl::StrContains(scheduler()->ReadStdout(), why); },
                        absl::Seconds(15)))
        << why << "\n"
        << scheduler()->LogTail();
  }
  Job job;
  ASSERT_TRUE(SubmitAs(user, ChatRequest("who runs me?", R"({"tokens": 3})"), &job).ok());
  absl::SleepFor(absl::Milliseconds(500));
  ASSERT_TRUE(GetAs(user, job.id(), &job).ok());
  EXPECT_EQ(job.state(), v1::QUEUED);  // nobody may take it
  // A worker credential runs it; the same credential cannot use JobService.
  ASSERT_NE(StartWorker("w-ok", {"--token", WorkerToken({"chat", "embed"})}), nullptr);
  ASSERT_TRUE(WaitSucceeded(user, job.id()).ok());
  Job other;
  grpc::Status s = SubmitAs(WorkerToken(), ChatRequest("x"), &other);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GetAs(WorkerToken(), job.id(), &other).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(AuthE2eTest, KeyRotationFailsNoRequest) {
  ASSERT_NO_FATAL_FAILURE(StartAuthedCluster());
  const std::string old_token = Hs256(Who("alice"), "h1");
  std::atomic<bool> stop{false};
  std::atomic<int> calls{0}, failures{0};
  std::string first_failure;
  absl::Mutex mu;
  std::thread caller([&] {
    auto stub = v1::JobService::NewStub(CreateTestChannel(scheduler_address()));
    while (!stop.load()) {
      grpc::ClientContext ctx;
      WithToken(&ctx, old_token);
      v1::ListJobsRequest req;
      req.set_page_size(1);
      v1::ListJobsResponse resp;
      grpc::Status s = stub->ListJobs(&ctx, req, &resp);
      calls.fetch_add(1);
      if (!s.ok() && failures.fetch_add(1) == 0) {
        absl::MutexLock lock(&mu);
        first_failure = s.error_message();
      }
    }
  });
  // Add the new key beside the old one, then (clients moved over) drop the old one.
  WriteKeys({"h1", "h2"});
  const std::string new_token = Hs256(Who("alice"), "h2");
  Job job;
  EXPECT_TRUE(WaitFor([&] { return SubmitAs(new_token, ChatRequest("x"), &job).ok(); },
                      absl::Seconds(10), absl::Milliseconds(50)));
  stop = true;
  caller.join();
  EXPECT_GT(calls.load(), 20);
  EXPECT_EQ(failures.load(), 0) << first_failure;
  WriteKeys({"h2"});
  grpc::Status s;
  EXPECT_TRUE(WaitFor(
      [&] {
        s = SubmitAs(old_token, ChatRequest("x"), &job);
        return s.error_code() == grpc::StatusCode::UNAUTHENTICATED;
      },
      absl::Seconds(10), absl::Milliseconds(50)));
  EXPECT_TRUE(absl::StrContains(s.error_message(), "unknown kid \"h1\"")) << s.error_message();
  EXPECT_TRUE(SubmitAs(new_token, ChatRequest("x"), &job).ok());
  // A broken file keeps the keys in use.
  std::ofstream(keys_path_) << "{ not json";
  absl::SleepFor(absl::Milliseconds(600));
  EXPECT_TRUE(SubmitAs(new_token, ChatRequest("x"), &job).ok());
  EXPECT_TRUE(absl::StrContains(scheduler()->ReadStdout(), "keeping the current JWT keys"));
}

// aijobsctl against replica A creates a key, replica B accepts it within seconds; revoked on
// A, B refuses it within seconds. Keys are per tenant and need the admin role.
TEST_F(AuthE2eTest, ApiKeysAcrossReplicas) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler(AuthFlags()));
  const std::string replica_a = scheduler_address();
  Process* replica_a_process = scheduler();
  ASSERT_NO_FATAL_FAILURE(StartScheduler(AuthFlags()));
  const std::string replica_b = scheduler_address();
  ASSERT_NE(StartWorker("w1", {"--token", WorkerToken()}), nullptr);
  const std::string admin = Hs256(Who("ops", "t1", {"admin"}));
  const std::string user = Hs256(Who("alice", "t1"));
  auto ctl = [&](const std::string& server, const std::string& token,
                 std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", server, "--token", token});
    auto r = RunCommand(BinPath("aijobsctl"), args, absl::Seconds(30));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CommandResult{};
  };
  CommandResult denied = ctl(replica_a, user, {"apikey", "create", "--name", "svc"});
  EXPECT_NE(denied.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(denied.err, "PERMISSION_DENIED")) << denied.err;
  CommandResult created =
      ctl(replica_a, admin,
          {"apikey", "create", "--name", "svc-reports", "--role", "reporter", "--expires", "90d"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string key(absl::StripAsciiWhitespace(created.out));
  ASSERT_TRUE(absl::StartsWith(key, "aij_")) << created.out;
  const std::string key_id = key.substr(4, 16);

  auto stub_b = v1::JobService::NewStub(CreateTestChannel(replica_b));
  Job job;
  EXPECT_TRUE(WaitFor(
      [&] {
        return SubmitAs(key, ChatRequest("from a service", R"({"tokens": 3})"), &job, stub_b.get())
            .ok();
      },
      absl::Seconds(5), absl::Milliseconds(50)));
  EXPECT_EQ(job.tenant_id(), "t1");
  EXPECT_EQ(job.owner(), "apikey:svc-reports");
  // The key's jobs are its own: another user of t1 does not see them.
  Job seen;
  EXPECT_EQ(GetAs(user, job.id(), &seen, stub_b.get()).error_code(), grpc::StatusCode::NOT_FOUND);

  CommandResult listed = ctl(replica_b, admin, {"apikey", "list"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_TRUE(absl::StrContains(listed.out, key_id)) << listed.out;
  EXPECT_FALSE(absl::StrContains(listed.out, key.substr(21))) << "the secret is never listed";
  // Another tenant's admin neither lists nor revokes it.
  const std::string admin2 = Hs256(Who("ops", "t2", {"admin"}));
  EXPECT_FALSE(absl::StrContains(ctl(replica_b, admin2, {"apikey", "list"}).out, key_id));
  EXPECT_NE(ctl(replica_b, admin2, {"apikey", "revoke", key_id}).exit_code, 0);

  CommandResult revoked = ctl(replica_a, admin, {"apikey", "revoke", key_id});
  ASSERT_EQ(revoked.exit_code, 0) << revoked.err;
  EXPECT_TRUE(absl::StrContains(revoked.out, "REVOKED")) << revoked.out;
  const absl::Time revoked_at = absl::Now();
  grpc::Status s;
  EXPECT_TRUE(WaitFor(
      [&] {
        s = SubmitAs(key, ChatRequest("after revoke"), &job, stub_b.get());
        return s.error_code() == grpc::StatusCode::UNAUTHENTICATED;
      },
      absl::Seconds(5), absl::Milliseconds(20)));
  EXPECT_LT(absl::Now() - revoked_at, absl::Seconds(5));
  EXPECT_TRUE(absl::StrContains(s.error_message(), "unknown or revoked API key"));

  // A worker API key runs jobs; the key cannot call JobService.
  CommandResult wkey =
      ctl(replica_a, admin,
          {"apikey", "create", "--name", "gpu-pool", "--role", "worker", "--job_type", "chat"});
  ASSERT_EQ(wkey.exit_code, 0) << wkey.err;
  const std::string worker_key(absl::StripAsciiWhitespace(wkey.out));
  for (auto& w : workers_) w->Kill();
  ASSERT_NE(StartWorker("w-key", {"--token", worker_key, "--job_types", "chat"}), nullptr);
  ASSERT_TRUE(SubmitAs(user, ChatRequest("run by a key", R"({"tokens": 3})"), &job).ok());
  EXPECT_TRUE(WaitSucceeded(user, job.id()).ok());
  EXPECT_EQ(SubmitAs(worker_key, ChatRequest("x"), &job).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  // No credential appears in any process's log.
  std::vector<std::string> logs = {scheduler()->ReadStdout(), replica_a_process->ReadStdout()};
  for (const auto& w : workers_) logs.push_back(w->ReadStdout());
  for (const std::string& log : logs) {
    for (const std::string& secret : {key, key.substr(21), worker_key, admin, user}) {
      EXPECT_FALSE(absl::StrContains(log, secret)) << "a credential is in a log";
    }
  }
}

TEST_F(AuthE2eTest, GatewayAnswers401WithTheReasonAnd404AcrossTenants) {
  ASSERT_NO_FATAL_FAILURE(StartAuthedCluster());
  const std::string base = StartGateway();
  ASSERT_FALSE(base.empty());
  const std::string alice = Hs256(Who("alice", "t1"));
  const std::string bob = Hs256(Who("bob", "t2"));
  auto post = [&](const std::string& token, const std::string& body) {
    std::vector<std::pair<std::string, std::string>> h = {{"Content-Type", "application/json"}};
    if (!token.empty()) h.emplace_back("Authorization", "Bearer " + token);
    return HttpCall("POST", base + "/v1/jobs", body, h);
  };
  const std::string embed = R"({"type":"embed","input":{"texts":["a"]}})";
  HttpResult anon = post("", embed);
  EXPECT_EQ(anon.status, 401) << anon.body;
  EXPECT_EQ(anon.Header("WWW-Authenticate"), "Bearer realm=\"aijobs\"");
  Claims old = Who("alice");
  old.ttl = -absl::Minutes(5);
  HttpResult expired = post(Hs256(old), embed);
  EXPECT_EQ(expired.status, 401);
  EXPECT_EQ(
      expired.Header("WWW-Authenticate"),
      "Bearer realm=\"aijobs\", error=\"invalid_token\", error_description=\"token expired\"");
  HttpResult made = post(alice, embed);
  ASSERT_EQ(made.status, 202) << made.body;
  const std::string location = made.Header("Location");
  ASSERT_FALSE(location.empty());
  HttpResult theirs = HttpCall("GET", base + location, "", {{"Authorization", "Bearer " + bob}});
  EXPECT_EQ(theirs.status, 404) << theirs.body;
  HttpResult mine = HttpCall("GET", base + location, "", {{"Authorization", "Bearer " + alice}});
  EXPECT_EQ(mine.status, 200) << mine.body;
  // Worker credentials are refused with 403; the public type works anonymously.
  HttpResult worker = post(WorkerToken(), embed);
  EXPECT_EQ(worker.status, 403) << worker.body;
  EXPECT_EQ(
      post("", R"({"type":"chat","input":{"messages":[{"role":"user","content":"hi"}]}})").status,
      202);
  // API keys over HTTP: admin only.
  const std::string admin = Hs256(Who("ops", "t1", {"admin"}));
  HttpResult created =
      HttpCall("POST", base + "/v1/admin/api-keys", R"({"name":"web"})",
               {{"Content-Type", "application/json"}, {"Authorization", "Bearer " + admin}});
  EXPECT_EQ(created.status, 200) << created.body;
  EXPECT_TRUE(absl::StrContains(created.body, "\"key\":\"aij_")) << created.body;
  HttpResult refused =
      HttpCall("GET", base + "/v1/admin/api-keys", "", {{"Authorization", "Bearer " + alice}});
  EXPECT_EQ(refused.status, 403) << refused.body;
}

// The audit log records who did what to which job, and every refused authentication, without
// prompts unless --audit_payloads; aijobsctl audit lists it for a tenant's admin.
TEST_F(AuthE2eTest, AuditTrail) {
  ASSERT_NO_FATAL_FAILURE(StartAuthedCluster());
  const std::string alice = Hs256(Who("alice", "t1"));
  const std::string admin = Hs256(Who("ops", "t1", {"admin"}));
  const std::string default_admin = Hs256(Who("root", "", {"admin"}));
  Job job;
  v1::SubmitJobRequest req =
      ChatRequest("a private prompt", R"({"tokens": 200, "tokens_per_s": 20})");
  ASSERT_TRUE(SubmitAs(alice, req, &job).ok());
  ASSERT_TRUE(CancelAs(alice, job.id()).ok());
  ASSERT_TRUE(RetryAs(alice, job.id()).ok());
  Claims old = Who("alice", "t1");
  old.ttl = -absl::Minutes(5);
  const std::string expired = Hs256(old);
  Job refused;
  EXPECT_FALSE(SubmitAs(expired, ChatRequest("x"), &refused).ok());

  auto audit = [&](const std::string& token, std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", scheduler_address(), "--token", token, "audit"});
    auto r = RunCommand(BinPath("aijobsctl"), args, absl::Seconds(30));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CommandResult{};
  };
  CommandResult t1;
  EXPECT_TRUE(WaitFor(
      [&] {
        t1 = audit(admin, {"--json"});
        return absl::StrContains(t1.out, "\"retry\"");
      },
      absl::Seconds(10), absl::Milliseconds(200)))
      << t1.out << t1.err;
  v1::ListAuditEventsResponse events;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(t1.out, &events).ok()) << t1.out;
  std::map<std::string, v1::AuditEvent> by_action;
  for (const auto& e : events.events()) by_action[e.action()] = e;
  for (const char* action : {"submit", "cancel", "retry"}) {
    ASSERT_TRUE(by_action.count(action)) << action << " missing:\n" << t1.out;
    const v1::AuditEvent& e = by_action[action];
    EXPECT_EQ(e.tenant_id(), "t1");
    EXPECT_EQ(e.subject(), "alice");
    EXPECT_EQ(e.job_id(), job.id());
    EXPECT_EQ(e.code(), "OK");
    EXPECT_TRUE(absl::StartsWith(e.peer(), "ipv4:127.0.0.1:")) << e.peer();
    EXPECT_TRUE(e.payload().empty());
  }
  EXPECT_EQ(by_action["submit"].target(), "chat");
  EXPECT_FALSE(absl::StrContains(t1.out, "a private prompt")) << "prompts are not audited";
  // The refused call's tenant is not known: it is in the default tenant's log, not t1's.
  EXPECT_FALSE(by_action.count("auth_refused"));
  CommandResult defaults = audit(default_admin, {"--json", "--since", "1h"});
  EXPECT_TRUE(absl::StrContains(defaults.out, "\"auth_refused\"")) << defaults.out;
  EXPECT_TRUE(absl::StrContains(defaults.out, "JobService.SubmitJob")) << defaults.out;
  EXPECT_TRUE(absl::StrContains(defaults.out, "token expired")) << defaults.out;
  EXPECT_FALSE(absl::StrContains(defaults.out, expired)) << "a credential is in the audit log";
  // Filters, and only admins.
  EXPECT_EQ(audit(admin, {"--subject", "nobody", "--json"}).out.find("alice"), std::string::npos);
  CommandResult denied = audit(alice, {});
  EXPECT_NE(denied.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(denied.err, "PERMISSION_DENIED")) << denied.err;

  // With --audit_payloads the input is kept.
  std::vector<std::string> flags = AuthFlags();
  flags.push_back("--audit_payloads");
  ASSERT_NO_FATAL_FAILURE(StartScheduler(flags));
  ASSERT_TRUE(SubmitAs(alice, ChatRequest("kept for the auditors"), &job).ok());
  CommandResult with_payloads;
  EXPECT_TRUE(WaitFor(
      [&] {
        with_payloads = audit(admin, {"--json", "--subject", "alice"});
        return absl::StrContains(with_payloads.out, "kept for the auditors");
      },
      absl::Seconds(10), absl::Milliseconds(200)))
      << with_payloads.out;
}

// TLS on the scheduler's port, and workers identified by a client certificate (mTLS). The
// certificates are made with openssl at run time.
TEST_F(AuthE2eTest, TlsAndWorkerClientCertificates) {
  const std::string d = dir_;
  auto sh = [](const std::string& script) {
    auto r = RunCommand("/bin/sh", {"-c", script}, absl::Seconds(60));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->exit_code, 0) << script << "\n" << r->err;
  };
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
  ASSERT_NO_FATAL_FAILURE(sh(absl::StrCat(
      "cd '", d, "' && openssl req -x509 ", ec, " -keyout ca.key -out ca.pem -days 1 ",
      "-subj /CN=aijobs-test-ca 2>/dev/null && ", "openssl req ", ec,
      " -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null && ",
      "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext && ",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 ",
      "-extfile server.ext -out server.pem 2>/dev/null && ", "openssl req ", ec,
      " -keyout worker.key -out worker.csr -subj /CN=gpu-worker-1 2>/dev/null && ",
      "printf 'extendedKeyUsage=clientAuth\\n' > worker.ext && ",
      "openssl x509 -req -in worker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 ",
      "-extfile worker.ext -out worker.pem 2>/dev/null")));

  const std::string address = absl::StrCat("127.0.0.1:", FreePort());
  ProcessOptions so;
  so.path = BinPath("aijobs-scheduler");
  so.args = {"--listen",        address,     "--database_url",  conninfo(),        "--tls_cert",
             d + "/server.pem", "--tls_key", d + "/server.key", "--tls_client_ca", d + "/ca.pem"};
  for (const std::string& f : AuthFlags()) so.args.push_back(f);
  auto sched = Process::Start(so);
  ASSERT_TRUE(sched.ok()) << sched.status();
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains((*sched)->ReadStdout(), "serving on port"); },
                      absl::Seconds(30)))
      << (*sched)->LogTail();
  EXPECT_TRUE(absl::StrContains((*sched)->ReadStdout(), "TLS, worker client certificates"));

  auto start_worker = [&](const std::string& id, std::vector<std::string> extra) {
    ProcessOptions wo;
    wo.path = BinPath("aijobs-worker");
    wo.args = {"--scheduler",        address, "--worker_id",        id,   "--sim_ttft_ms", "0",
               "--sim_tokens_per_s", "0",     "--reconnect_max_ms", "200"};
    wo.args.insert(wo.args.end(), extra.begin(), extra.end());
    auto w = Process::Start(wo);
    EXPECT_TRUE(w.ok()) << w.status();
    return w.ok() ? *std::move(w) : nullptr;
  };
  // No certificate and no token: TLS works, the stream is refused.
  auto anon_worker = start_worker("w-anon", {"--tls_ca", d + "/ca.pem"});
  ASSERT_NE(anon_worker, nullptr);
  EXPECT_TRUE(WaitFor(
      [&] {
        return absl::StrContains((*sched)->ReadStdout(),
                                 "WorkerService.Connect needs a worker credential");
      },
      absl::Seconds(15)))
      << (*sched)->LogTail();
  // The client certificate is the worker's credential.
  auto cert_worker = start_worker("w-cert", {"--tls_ca", d + "/ca.pem", "--tls_cert",
                                             d + "/worker.pem", "--tls_key", d + "/worker.key"});
  ASSERT_NE(cert_worker, nullptr);
  EXPECT_TRUE(WaitFor(
      [&] {
        return absl::StrContains((*sched)->ReadStdout(), "client certificate cert:gpu-worker-1");
      },
      absl::Seconds(15)))
      << (*sched)->LogTail();

  const std::string alice = Hs256(Who("alice", "t1"));
  auto ctl = [&](std::vector<std::string> args) {
    auto r = RunCommand(BinPath("aijobsctl"), args, absl::Seconds(30));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CommandResult{};
  };
  CommandResult ok = ctl({"--server", address, "--tls_ca", d + "/ca.pem", "--token", alice,
                          "submit", "--type", "chat", "--prompt", "over TLS", "--wait"});
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  CommandResult plain = ctl({"--server", address, "--token", alice, "--timeout", "3s", "submit",
                             "--type", "chat", "--prompt", "plaintext"});
  EXPECT_NE(plain.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(plain.err, "UNAVAILABLE")) << plain.err;
  // A worker's certificate is not a client credential.
  CommandResult as_worker =
      ctl({"--server", address, "--tls_ca", d + "/ca.pem", "--tls_cert", d + "/worker.pem",
           "--tls_key", d + "/worker.key", "submit", "--type", "chat", "--prompt", "x"});
  EXPECT_NE(as_worker.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(as_worker.err, "PERMISSION_DENIED")) << as_worker.err;

  // The gateway reaches the scheduler over TLS.
  gateway_port_for_tls_ = FreePort();
  ProcessOptions go;
  go.path = BinPath("aijobs-gateway");
  go.args = {"--listen",           absl::StrCat("127.0.0.1:", gateway_port_for_tls_),
             "--scheduler",        address,
             "--scheduler_tls_ca", d + "/ca.pem"};
  auto gw = Process::Start(go);
  ASSERT_TRUE(gw.ok()) << gw.status();
  const std::string base = absl::StrCat("http://127.0.0.1:", gateway_port_for_tls_);
  HttpResult listed;
  EXPECT_TRUE(WaitFor(
      [&] {
        listed = HttpCall("GET", base + "/v1/jobs", "", {{"Authorization", "Bearer " + alice}});
        return listed.status == 200;
      },
      absl::Seconds(15), absl::Milliseconds(100)))
      << listed.status << " " << listed.body;
  EXPECT_TRUE(absl::StrContains(listed.body, "t1")) << listed.body;
}

// Quotas live in PostgreSQL: two replicas enforce a user's submit limit once, not twice; over
// it a submit is RESOURCE_EXHAUSTED naming the limit with retry-after, 429 + Retry-After over
// HTTP; another user of the tenant has a bucket of its own.
TEST_F(AuthE2eTest, SubmitQuotasHoldOnceAcrossReplicas) {
  std::vector<std::string> flags = AuthFlags();
  for (const char* f :
       {"--user_submit_rate", "0.1", "--user_submit_burst", "5", "--tenant_submit_rate", "0"}) {
    flags.push_back(f);
  }
  ASSERT_NO_FATAL_FAILURE(StartScheduler(flags));
  auto stub_a = v1::JobService::NewStub(CreateTestChannel(scheduler_address()));
  ASSERT_NO_FATAL_FAILURE(StartScheduler(flags));
  v1::JobService::Stub* stub_b = stub();
  const std::string alice = Hs256(Who("alice", "t1"));
  int ok = 0, limited = 0;
  std::string message, retry_after;
  for (int i = 0; i < 12; ++i) {
    grpc::ClientContext ctx;
    WithToken(&ctx, alice);
    Job job;
    grpc::Status s = (i % 2 == 0 ? stub_a.get() : stub_b)->SubmitJob(&ctx, ChatRequest("q"), &job);
    if (s.ok()) {
      ++ok;
    } else if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++limited;
      message = s.error_message();
      auto it = ctx.GetServerTrailingMetadata().find("retry-after");
      if (it != ctx.GetServerTrailingMetadata().end()) {
        retry_after = std::string(it->second.data(), it->second.size());
      }
    } else {
      ADD_FAILURE() << s.error_message();
    }
  }
  // 5 of burst, plus at most one refilled in the test's second or so; per replica it would be 10.
  EXPECT_GE(ok, 5);
  EXPECT_LE(ok, 6);
  EXPECT_EQ(ok + limited, 12);
  EXPECT_TRUE(absl::StrContains(message, "your submit rate limit reached (0.1 jobs/s, burst 5)"))
      << message;
  int64_t seconds = 0;
  EXPECT_TRUE(absl::SimpleAtoi(retry_after, &seconds) && seconds >= 1 && seconds <= 10)
      << retry_after;
  Job job;
  EXPECT_TRUE(SubmitAs(Hs256(Who("bob", "t1")), ChatRequest("q"), &job).ok());
  // Over HTTP: 429 with Retry-After.
  const std::string base = StartGateway();
  ASSERT_FALSE(base.empty());
  HttpResult r =
      HttpCall("POST", base + "/v1/jobs",
               R"({"type":"chat","input":{"messages":[{"role":"user","content":"x"}]}})",
               {{"Content-Type", "application/json"}, {"Authorization", "Bearer " + alice}});
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_FALSE(r.Header("Retry-After").empty()) << r.body;
}

}  // namespace
}  // namespace aijobs::testing
