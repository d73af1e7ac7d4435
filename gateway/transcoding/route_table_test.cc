#include "gateway/transcoding/route_table.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aijobs/v1/job_service.pb.h"
#include "gateway/transcoding/testdata/transcoding_test.pb.h"

namespace aijobs::gateway {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const google::protobuf::ServiceDescriptor* Service(const char* name) {
  // Referencing a message links the test proto's generated code into this binary.
  EXPECT_NE(transcoding_test::Message::descriptor(), nullptr);
  const auto* s = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
  EXPECT_NE(s, nullptr) << name;
  return s;
}

RouteTable JobRoutes() {
  // Referencing a message of job_service.proto links its generated code (a static library
  // member is only linked when used), which registers the service in the generated pool.
  EXPECT_NE(v1::GetJobRequest::descriptor(), nullptr);
  auto table = RouteTable::FromServices({Service("aijobs.v1.JobService")});
  EXPECT_TRUE(table.ok()) << table.status();
  return *std::move(table);
}

TEST(RouteTableTest, BuildsEveryJobServiceRoute) {
  RouteTable table = JobRoutes();
  std::vector<std::string> got;
  for (const Route& r : table.routes()) {
    // The label ("METHOD template") names the route in metrics and logs.
    got.push_back(r.label + " -> " + r.grpc_path + " body=" + r.body +
                  (r.server_streaming ? " stream" : ""));
  }
  // Other annotated methods may be added to the contract later; these must stay.
  std::vector<std::string> want = {
      "POST /v1/jobs -> /aijobs.v1.JobService/SubmitJob body=*",
      "GET /v1/jobs/{job_id} -> /aijobs.v1.JobService/GetJob body=",
      "GET /v1/jobs/{job_id}/events -> /aijobs.v1.JobService/WatchJob body= stream",
      "POST /v1/jobs/{job_id}:cancel -> /aijobs.v1.JobService/CancelJob body=*",
      "GET /v1/jobs -> /aijobs.v1.JobService/ListJobs body=",
      "POST /v1/jobs/{job_id}:retry -> /aijobs.v1.JobService/RetryJob body=*"};
  EXPECT_THAT(got, ::testing::IsSupersetOf(want));
  EXPECT_EQ(table.routes()[1].method->input_type()->full_name(), "aijobs.v1.GetJobRequest");
}

TEST(RouteTableTest, FindsJobServiceRoutes) {
  RouteTable table = JobRoutes();
  std::vector<std::string> allowed = {"stale"};
  auto m = table.Find("GET", "/v1/jobs/abc", &allowed);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->method->name(), "GetJob");
  ASSERT_EQ(m->bindings.size(), 1u);
  EXPECT_EQ(m->bindings[0].value, "abc");
  EXPECT_THAT(allowed, IsEmpty());

  m = table.Find("POST", "/v1/jobs/abc:cancel", &allowed);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->method->name(), "CancelJob");
  EXPECT_EQ(m->bindings[0].value, "abc");

  m = table.Find("POST", "/v1/jobs/abc:retry", nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->method->name(), "RetryJob");

  m = table.Find("GET", "/v1/jobs/abc/events?after_seq=3", nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->method->name(), "WatchJob");
  EXPECT_TRUE(m->route->server_streaming);

  m = table.Find("GET", "/v1/jobs", nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->method->name(), "ListJobs");
  m = table.Find("POST", "/v1/jobs", nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->method->name(), "SubmitJob");
}

TEST(RouteTableTest, UnknownPathIsNotFoundWithoutAllowed) {
  RouteTable table = JobRoutes();
  std::vector<std::string> allowed;
  auto m = table.Find("GET", "/v2/jobs", &allowed);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(allowed, IsEmpty());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("no route for GET /v2/jobs"));
}

TEST(RouteTableTest, WrongMethodListsAllowedMethods) {
  RouteTable table = JobRoutes();
  std::vector<std::string> allowed;
  auto m = table.Find("DELETE", "/v1/jobs", &allowed);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(allowed, ElementsAre("GET", "POST"));
  m = table.Find("GET", "/v1/jobs/abc:cancel", &allowed);
  // GET /v1/jobs/{job_id} still matches (the value keeps ":cancel"), as in grpc-gateway.
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->route->method->name(), "GetJob");
  m = table.Find("PUT", "/v1/jobs/abc:cancel", &allowed);
  EXPECT_FALSE(m.ok());
  EXPECT_THAT(allowed, ElementsAre("GET", "POST"));
  m = table.Find("get", "/v1/jobs/abc", &allowed);  // methods are case-sensitive
  EXPECT_FALSE(m.ok());
  EXPECT_THAT(allowed, ElementsAre("GET"));
}

RouteTable TestRoutes() {
  auto table = RouteTable::FromServices({Service("aijobs.gateway.transcoding_test.Messaging")});
  EXPECT_TRUE(table.ok()) << table.status();
  return *std::move(table);
}

TEST(RouteTableTest, AdditionalBindingsCustomMethodsAndResponseBody) {
  RouteTable table = TestRoutes();
  auto m = table.Find("GET", "/v1/users/me/messages/123456", nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->method->name(), "GetMessage");
  ASSERT_EQ(m->bindings.size(), 2u);
  EXPECT_EQ(m->bindings[0].field_path, std::vector<std::string>{"user_id"});
  EXPECT_EQ(m->bindings[1].value, "123456");

  m = table.Find("HEAD", "/v1/messages/1", nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->method->name(), "HeadMessage");

  m = table.Find("GET", "/v1/messages", nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->response_body, "messages");

  m = table.Find("PUT", "/v1/messages/1", nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->body, "message");

  std::vector<std::string> allowed;
  EXPECT_FALSE(table.Find("DELETE", "/v1/messages/1", &allowed).ok());
  EXPECT_THAT(allowed, ElementsAre("GET", "HEAD", "PATCH", "PUT"));

  // Methods without an annotation get no route.
  for (const Route& r : table.routes()) EXPECT_NE(r.method->name(), "NotExposed");
}

TEST(RouteTableTest, MoreLiteralSegmentsWin) {
  RouteTable table = TestRoutes();
  // Both "/v1/messages/{message_id}/{sub.subfield}" and "/v1/messages/{message_id}/text"
  // match this path, but only with GET vs POST; with POST the literal one is chosen.
  auto m = table.Find("POST", "/v1/messages/1/text", nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->method->name(), "SetText");
  m = table.Find("GET", "/v1/messages/1/text", nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->method->name(), "GetSubMessage");
  // "/v1/messages/{message_id}/stream" beats "/v1/messages/{message_id}/{sub.subfield}" even
  // though it is declared later.
  m = table.Find("GET", "/v1/messages/1/stream", nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->method->name(), "Stream");
}

TEST(RouteTableTest, TiesGoToTheRouteDeclaredFirst) {
  RouteTable table = TestRoutes();
  auto m = table.Find("GET", "/v1/messages/1/foo", nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->method->name(), "GetSubMessage");
  // The later route is reachable where the earlier one does not match.
  auto later = table.routes().back().path.Match("/v1/messages/1/foo");
  ASSERT_TRUE(later.has_value());
  EXPECT_EQ((*later)[0].value, "messages/1");
  EXPECT_EQ(table.routes().back().method->name(), "TieLater");
}

TEST(RouteTableTest, DeepWildcardRoute) {
  RouteTable table = TestRoutes();
  auto m = table.Find("GET", "/v1/shelves/s/books/a/b", nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->route->method->name(), "GetBook");
  EXPECT_EQ(m->bindings[0].value, "shelves/s/books/a/b");
}

struct BadService {
  const char* service;
  const char* error;
};

class BadAnnotationTest : public ::testing::TestWithParam<BadService> {};

TEST_P(BadAnnotationTest, IsRejectedNamingTheMethod) {
  std::string full = std::string("aijobs.gateway.transcoding_test.") + GetParam().service;
  auto table = RouteTable::FromServices({Service(full.c_str())});
  ASSERT_FALSE(table.ok());
  EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(table.status().message()), HasSubstr(full + "."));
  EXPECT_THAT(std::string(table.status().message()), HasSubstr(GetParam().error));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadAnnotationTest,
    ::testing::Values(BadService{"BadBodyField", "body field \"nope\" does not exist"},
                      BadService{"BadPathField",
                                 "variable {missing}: field \"missing\" does not exist"},
                      BadService{"MessagePathField", "variable {sub} names message field"},
                      BadService{"RepeatedPathField", "variable {tags} names repeated field"},
                      BadService{"BadTemplate", "unterminated variable at offset 4"},
                      BadService{"BadResponseBody", "response_body field \"nope\" does not exist"},
                      BadService{"DuplicateRoute", "GET /v1/dup is already bound to"}));

TEST(RouteTableTest, NullServiceIsAnError) {
  EXPECT_FALSE(RouteTable::FromServices({nullptr}).ok());
}

}  // namespace
}  // namespace aijobs::gateway
