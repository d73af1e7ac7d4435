#include "gateway/transcoding/request_mapper.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "aijobs/v1/job_service.pb.h"
#include "gateway/transcoding/testdata/transcoding_test.pb.h"
#include "google/protobuf/util/message_differencer.h"

namespace aijobs::gateway {
namespace {

using ::testing::HasSubstr;
namespace tp = ::aijobs::gateway::transcoding_test;

class RequestMapperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* pool = google::protobuf::DescriptorPool::generated_pool();
    auto table = RouteTable::FromServices(
        {pool->FindServiceByName("aijobs.v1.JobService"),
         pool->FindServiceByName("aijobs.gateway.transcoding_test.Messaging")});
    ASSERT_TRUE(table.ok()) << table.status();
    table_ = *std::move(table);
  }

  // Finds the route, then builds the request of type T from path?query and body.
  template <typename T>
  absl::Status Build(absl::string_view method, absl::string_view target, absl::string_view body,
                     T* request, JsonOptions options = {}) {
    size_t q = target.find('?');
    absl::string_view path = target.substr(0, q);
    absl::string_view query = q == absl::string_view::npos ? "" : target.substr(q + 1);
    auto match = table_.Find(method, path, nullptr);
    EXPECT_TRUE(match.ok()) << match.status();
    if (!match.ok()) return match.status();
    EXPECT_EQ(match->route->method->input_type(), T::descriptor());
    return BuildRequest(*match->route, match->bindings, query, body, options, request);
  }

  const Route& RouteOf(absl::string_view method, absl::string_view path) {
    auto match = table_.Find(method, path, nullptr);
    EXPECT_TRUE(match.ok()) << match.status();
    return *match->route;
  }

  RouteTable table_;
};

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

TEST_F(RequestMapperTest, PathVariableAndQueryFromHttpProto) {
  // GET /v1/messages/123456?revision=2&sub.subfield=foo
  tp::GetMessageRequest req;
  ASSERT_TRUE(Build("GET", "/v1/messages/123456?revision=2&sub.subfield=foo", "", &req).ok());
  EXPECT_EQ(req.message_id(), "123456");
  EXPECT_EQ(req.revision(), 2);
  EXPECT_EQ(req.sub().subfield(), "foo");
}

TEST_F(RequestMapperTest, NestedPathVariable) {
  tp::GetMessageRequest req;
  ASSERT_TRUE(Build("GET", "/v1/messages/123456/foo%20bar", "", &req).ok());
  EXPECT_EQ(req.message_id(), "123456");
  EXPECT_EQ(req.sub().subfield(), "foo bar");
}

TEST_F(RequestMapperTest, QueryScalarTypesByProtoAndJsonName) {
  tp::GetMessageRequest req;
  absl::Status s = Build("GET",
                         "/v1/messages/1?userId=me&tags=a&tags=b+c&numbers=1&numbers=-2"
                         "&color=GREEN&colors=1&colors=RED&flag=true&ratio=0.5"
                         "&big=18446744073709551615&blob=aGk%3D&wait=1.5s"
                         "&since=2024-01-02T03:04:05Z&limit=7&mask=a.b,c&sub.count=9"
                         "&sub.color=2",
                         "", &req);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(req.user_id(), "me");
  EXPECT_THAT(req.tags(), ::testing::ElementsAre("a", "b c"));
  EXPECT_THAT(req.numbers(), ::testing::ElementsAre(1, -2));
  EXPECT_EQ(req.color(), tp::GREEN);
  EXPECT_THAT(req.colors(), ::testing::ElementsAre(tp::RED, tp::RED));
  EXPECT_TRUE(req.flag());
  EXPECT_DOUBLE_EQ(req.ratio(), 0.5);
  EXPECT_EQ(req.big(), 18446744073709551615ull);
  EXPECT_EQ(req.blob(), "hi");
  EXPECT_EQ(req.wait().seconds(), 1);
  EXPECT_EQ(req.wait().nanos(), 500000000);
  EXPECT_EQ(req.since().seconds(), 1704164645);
  EXPECT_EQ(req.limit().value(), 7);
  EXPECT_THAT(req.mask().paths(), ::testing::ElementsAre("a.b", "c"));
  EXPECT_EQ(req.sub().count(), 9);
  EXPECT_EQ(req.sub().color(), tp::GREEN);
}

TEST_F(RequestMapperTest, JobServiceListAndWatch) {
  aijobs::v1::ListJobsRequest list;
  ASSERT_TRUE(Build("GET", "/v1/jobs?state=FAILED&page_size=10&pageToken=t%2Fx", "", &list).ok());
  EXPECT_EQ(list.state(), aijobs::v1::FAILED);
  EXPECT_EQ(list.page_size(), 10);
  EXPECT_EQ(list.page_token(), "t/x");

  aijobs::v1::WatchJobRequest watch;
  ASSERT_TRUE(Build("GET", "/v1/jobs/j1/events?after_seq=9007199254740993", "", &watch).ok());
  EXPECT_EQ(watch.job_id(), "j1");
  EXPECT_EQ(watch.after_seq(), 9007199254740993);
}

TEST_F(RequestMapperTest, BadQueryValuesNameTheParameter) {
  aijobs::v1::ListJobsRequest list;
  absl::Status s = Build("GET", "/v1/jobs?page_size=ten", "", &list);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("query parameter \"page_size\": \"ten\" is not a valid int32"));

  s = Build("GET", "/v1/jobs?state=DONE", "", &list);
  EXPECT_THAT(Msg(s), HasSubstr("\"DONE\" is not a value of aijobs.v1.JobState"));
  EXPECT_THAT(Msg(s), HasSubstr("SUCCEEDED"));

  s = Build("GET", "/v1/jobs?page_size=99999999999", "", &list);
  EXPECT_THAT(Msg(s), HasSubstr("not a valid int32"));

  tp::GetMessageRequest req;
  s = Build("GET", "/v1/messages/1?flag=yes", "", &req);
  EXPECT_THAT(Msg(s), HasSubstr("query parameter \"flag\": \"yes\" is not a valid bool"));
  s = Build("GET", "/v1/messages/1?wait=5minutes", "", &req);
  EXPECT_THAT(Msg(s), HasSubstr("is not a valid google.protobuf.Duration"));
  s = Build("GET", "/v1/messages/1?since=yesterday", "", &req);
  EXPECT_THAT(Msg(s), HasSubstr("is not a valid google.protobuf.Timestamp"));
  s = Build("GET", "/v1/messages/1?limit=x", "", &req);
  EXPECT_THAT(Msg(s), HasSubstr("query parameter \"limit\""));
  EXPECT_FALSE(req.has_limit());
  s = Build("GET", "/v1/messages/1?revision=1&revision=2", "", &req);
  EXPECT_THAT(Msg(s), HasSubstr("given more than once"));
  s = Build("GET", "/v1/messages/1?sub=x", "", &req);
  EXPECT_THAT(Msg(s), HasSubstr("is a message"));
  s = Build("GET", "/v1/messages/1?extra=x", "", &req);
  EXPECT_THAT(Msg(s), HasSubstr("is a message"));
  s = Build("GET", "/v1/messages/1?labels=x", "", &req);
  EXPECT_THAT(Msg(s), HasSubstr("map fields"));
  s = Build("GET", "/v1/messages/1?subs.subfield=x", "", &req);
  EXPECT_THAT(Msg(s), HasSubstr("is repeated"));
  s = Build("GET", "/v1/messages/1?flag.x=1", "", &req);
  EXPECT_THAT(Msg(s), HasSubstr("not a message field"));
  s = Build("GET", "/v1/messages/1?tags=%zz", "", &req);
  EXPECT_THAT(Msg(s), HasSubstr("malformed %-escape"));
}

TEST_F(RequestMapperTest, UnknownQueryParameter) {
  aijobs::v1::ListJobsRequest list;
  absl::Status s = Build("GET", "/v1/jobs?colour=red", "", &list);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("unknown query parameter \"colour\""));
  JsonOptions lenient;
  lenient.lenient = true;
  EXPECT_TRUE(Build("GET", "/v1/jobs?colour=red&type=chat", "", &list, lenient).ok());
  EXPECT_EQ(list.type(), "chat");
  JsonOptions reserved;
  reserved.reserved_query_params = {"last_event_id"};
  aijobs::v1::WatchJobRequest watch;
  EXPECT_TRUE(Build("GET", "/v1/jobs/j/events?last_event_id=5", "", &watch, reserved).ok());
  EXPECT_FALSE(Build("GET", "/v1/jobs/j/events?last_event_id=5", "", &watch).ok());
}

TEST_F(RequestMapperTest, PathWinsOverQueryAndBody) {
  tp::GetMessageRequest req;
  ASSERT_TRUE(
      Build("GET", "/v1/messages/fromPath?message_id=fromQuery&messageId=q2", "", &req).ok());
  EXPECT_EQ(req.message_id(), "fromPath");

  aijobs::v1::CancelJobRequest cancel;
  absl::Status s = Build("POST", "/v1/jobs/fromPath:cancel",
                         R"({"job_id":"fromBody","reason":"user asked"})", &cancel);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(cancel.job_id(), "fromPath");
  EXPECT_EQ(cancel.reason(), "user asked");
}

TEST_F(RequestMapperTest, BodyStarIsTheWholeMessage) {
  aijobs::v1::SubmitJobRequest submit;
  absl::Status s = Build("POST", "/v1/jobs",
                         R"({"type":"chat","input":{"messages":[{"role":"user","content":"hi"}]},
                             "maxAttempts":2,"labels":{"k":"v"},"timeout":"30s",
                             "cache":{"ttl":"60s"}})",
                         &submit);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(submit.type(), "chat");
  EXPECT_EQ(submit.max_attempts(), 2);
  EXPECT_EQ(submit.labels().at("k"), "v");
  EXPECT_EQ(submit.timeout().seconds(), 30);
  EXPECT_EQ(submit.cache().ttl().seconds(), 60);
  EXPECT_EQ(submit.input().fields().at("messages").list_value().values_size(), 1);
  // Query parameters for fields covered by body "*" are ignored (grpc-gateway does the same).
  aijobs::v1::SubmitJobRequest again;
  s = Build("POST", "/v1/jobs?type=embed", R"({"type":"chat"})", &again);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(again.type(), "chat");
  // An empty body is allowed: nothing is set.
  aijobs::v1::RetryJobRequest retry;
  ASSERT_TRUE(Build("POST", "/v1/jobs/j9:retry", "", &retry).ok());
  EXPECT_EQ(retry.job_id(), "j9");
}

TEST_F(RequestMapperTest, MalformedJsonReportsParserReason) {
  aijobs::v1::SubmitJobRequest submit;
  absl::Status s = Build("POST", "/v1/jobs", R"({"type": chat})", &submit);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("invalid JSON request body: "));
  // protobuf's parser reason plus the offending text with a caret under the position.
  EXPECT_THAT(Msg(s), HasSubstr("Unexpected token"));
  EXPECT_THAT(Msg(s), HasSubstr("{\"type\": chat}\n         ^"));
  s = Build("POST", "/v1/jobs", R"({"type":"chat")", &submit);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = Build("POST", "/v1/jobs", R"({"priority":"high"})", &submit);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("priority"));
}

TEST_F(RequestMapperTest, UnknownJsonFieldIsNamedUnlessLenient) {
  aijobs::v1::SubmitJobRequest submit;
  absl::Status s = Build("POST", "/v1/jobs", R"({"type":"chat","colour":"red"})", &submit);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("colour"));
  JsonOptions lenient;
  lenient.lenient = true;
  s = Build("POST", "/v1/jobs", R"({"type":"chat","colour":"red"})", &submit, lenient);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(submit.type(), "chat");
}

TEST_F(RequestMapperTest, BodyFieldFromHttpProto) {
  // PUT /v1/messages/123456 { "text": "Hi!" } -> message_id: "123456" message { text: "Hi!" }
  tp::UpdateMessageRequest update;
  absl::Status s = Build("PUT", "/v1/messages/123456", R"({ "text": "Hi!" })", &update);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(update.message_id(), "123456");
  EXPECT_EQ(update.message().text(), "Hi!");
  s = Build("PUT", "/v1/messages/1", R"({ "txt": "Hi!" })", &update);
  EXPECT_THAT(Msg(s), HasSubstr("txt"));
}

TEST_F(RequestMapperTest, ScalarBodyFieldCannotSmuggleOtherFields) {
  tp::Message msg;
  absl::Status s = Build("POST", "/v1/messages/1/text", R"("hello")", &msg);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(msg.text(), "hello");
  EXPECT_EQ(msg.message_id(), "1");
  s = Build("POST", "/v1/messages/1/text", R"("x", "revision": "5")", &msg);
  if (s.ok()) {
    EXPECT_EQ(msg.revision(), 0);
  }
  s = Build("POST", "/v1/messages/1/text?revision=4", R"("x")", &msg);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(msg.revision(), 4);  // not covered by body "text": comes from the query
}

TEST_F(RequestMapperTest, BodyStarFromHttpProto) {
  // PUT /v1/messages/123456 { "text": "Hi!" } with body "*" (here PATCH).
  tp::Message msg;
  ASSERT_TRUE(Build("PATCH", "/v1/messages/123456", R"({ "text": "Hi!" })", &msg).ok());
  EXPECT_EQ(msg.message_id(), "123456");
  EXPECT_EQ(msg.text(), "Hi!");
}

TEST_F(RequestMapperTest, NoBodyRouteRejectsABody) {
  aijobs::v1::GetJobRequest get;
  absl::Status s = Build("GET", "/v1/jobs/j", R"({"job_id":"x"})", &get);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("takes no request body"));
  EXPECT_TRUE(Build("GET", "/v1/jobs/j", " \r\n", &get).ok());
}

TEST_F(RequestMapperTest, BadPathValueForTypedField) {
  // A path variable bound to a non-string field is parsed like a query value.
  RouteTable::Match m{&RouteOf("GET", "/v1/messages/1"), {{{"revision"}, "abc"}}};
  tp::GetMessageRequest req;
  absl::Status s = BuildRequest(*m.route, m.bindings, "", "", {}, &req);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("path variable {revision}: \"abc\" is not a valid int64"));
}

TEST_F(RequestMapperTest, ResponseJsonUsesLowerCamelCase) {
  aijobs::v1::Job job;
  job.set_id("j1");
  job.set_state(aijobs::v1::RUNNING);
  job.set_last_seq(12);
  job.set_max_attempts(3);
  auto json = ResponseToJson(RouteOf("GET", "/v1/jobs/j1"), job);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(*json, R"({"id":"j1","state":"RUNNING","maxAttempts":3,"lastSeq":"12"})");
  JsonOptions emit;
  emit.emit_defaults = true;
  json = ResponseToJson(RouteOf("GET", "/v1/jobs/j1"), job, emit);
  ASSERT_TRUE(json.ok());
  EXPECT_THAT(*json, HasSubstr(R"("attempt":0)"));
  EXPECT_THAT(*json, HasSubstr(R"("type":"")"));
}

TEST_F(RequestMapperTest, ResponseBodyField) {
  tp::ListMessagesResponse list;
  list.add_messages()->set_text("a");
  list.add_messages()->set_revision(5);
  list.set_next_page_token("tok");
  auto json = ResponseToJson(RouteOf("GET", "/v1/messages"), list);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(*json, R"([{"text":"a"},{"revision":"5"}])");
  json = ResponseToJson(RouteOf("GET", "/v1/messages"), tp::ListMessagesResponse());
  ASSERT_TRUE(json.ok());
  EXPECT_EQ(*json, "[]");

  tp::Message msg;
  msg.set_text("he said \"hi\"");
  json = ResponseToJson(RouteOf("POST", "/v1/messages/1/text"), msg);
  ASSERT_TRUE(json.ok());
  EXPECT_EQ(*json, R"("he said \"hi\"")");
  json = ResponseToJson(RouteOf("POST", "/v1/messages/1/text"), tp::Message());
  ASSERT_TRUE(json.ok());
  EXPECT_EQ(*json, R"("")");
}

TEST(ParseQueryStringTest, DecodesKeysAndValues) {
  auto q = ParseQueryString("a=1&b+c=d+e%26&&flag&x=%3D=");
  ASSERT_TRUE(q.ok());
  std::vector<std::pair<std::string, std::string>> want = {
      {"a", "1"}, {"b c", "d e&"}, {"flag", ""}, {"x", "=="}};
  EXPECT_EQ(*q, want);
  EXPECT_FALSE(ParseQueryString("a=%G1").ok());
}

// `levels` nested arrays: "[[[...]]]".
std::string NestedArrays(int levels) { return std::string(levels, '[') + std::string(levels, ']'); }

TEST(CheckJsonShapeTest, CountsObjectsAndArraysTogetherAndIgnoresBracketsInStrings) {
  EXPECT_TRUE(CheckJsonShape("", 2).ok());
  EXPECT_TRUE(CheckJsonShape(R"({"a":[1,{"b":2}],"c":[]})", 3).ok());
  EXPECT_FALSE(CheckJsonShape(R"({"a":[1,{"b":2}],"c":[]})", 2).ok());
  // Siblings do not add up; only the depth counts.
  EXPECT_TRUE(CheckJsonShape("[[],[],[[]],[]]", 3).ok());
  // Brackets inside strings, also after escaped quotes and backslashes, are text.
  EXPECT_TRUE(CheckJsonShape(R"({"a":"[[[{{{","b":"\"[[[","c":"\\","d":"[[["})", 1).ok());
  EXPECT_FALSE(CheckJsonShape(R"({"a":"\\",["x"]})", 1).ok());
  absl::Status s = CheckJsonShape(NestedArrays(kMaxJsonDepth + 1));
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("maximum depth of 32 levels"));
  EXPECT_TRUE(CheckJsonShape(NestedArrays(kMaxJsonDepth)).ok());
}

TEST(CheckJsonShapeTest, RefusesAKeyTwiceInOneObjectAfterDecodingEscapes) {
  absl::Status s = CheckJsonShape(R"({"type":"chat","input":{"a":1},"input":{"b":2}})");
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("key \"input\" appears twice"));
  // The same key spelt with escapes is the same key.
  EXPECT_FALSE(CheckJsonShape(R"({"ab":1,"a\u0062":2})").ok());
  EXPECT_FALSE(CheckJsonShape(R"({"\ud83d\ude00":1,"😀":2})").ok());
  EXPECT_FALSE(CheckJsonShape(R"({"x":{"k":1,"k":2}})").ok());
  // The same key in different objects, a key equal to a value, and keys that differ are fine.
  EXPECT_TRUE(CheckJsonShape(R"({"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":2}]})").ok());
  EXPECT_TRUE(CheckJsonShape(R"({"a":"b","b":"a","k":["k","k"]})").ok());
  EXPECT_TRUE(CheckJsonShape(R"({"a\"":1,"a":2,"a\\":3})").ok());
}

TEST_F(RequestMapperTest, DuplicateKeyInABodyIsRejectedNotMerged) {
  const Route& route = RouteOf("POST", "/v1/jobs");
  aijobs::v1::SubmitJobRequest submit;
  absl::Status s = BuildRequest(
      route, {}, "", R"({"type":"chat","input":{"a":1},"input":{"b":2}})", {}, &submit);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(Msg(s), HasSubstr("\"input\" appears twice"));
}

TEST_F(RequestMapperTest, BodyNestedBeyondTheMaximumDepthIsRejectedBeforeParsing) {
  const Route& route = RouteOf("POST", "/v1/jobs");
  // The body object is level 1 and input level 2: x may hold 30 more levels.
  auto body = [](int levels) {
    return absl::StrCat(R"({"type":"chat","input":{"x":)", NestedArrays(levels), "}}");
  };
  aijobs::v1::SubmitJobRequest submit;
  absl::Status ok = BuildRequest(route, {}, "", body(kMaxJsonDepth - 2), {}, &submit);
  EXPECT_TRUE(ok.ok()) << ok;
  absl::Status over = BuildRequest(route, {}, "", body(kMaxJsonDepth - 1), {}, &submit);
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(over), HasSubstr("maximum depth of 32"));
  // Issue 10: 16,000 levels took protobuf's converter seconds; the scan answers at once.
  absl::Time start = absl::Now();
  absl::Status deep = BuildRequest(route, {}, "", body(16000), {}, &submit);
  EXPECT_EQ(deep.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(100));
}

TEST_F(RequestMapperTest, NestingWithinTheMaximumDepthCostsAboutWhatAFlatBodyDoes) {
  // The worst a caller can send within the limits: 1 MiB (the default body limit) of sibling
  // arrays each nested to the maximum depth. Conversion time then grows with the body's size,
  // not super-quadratically with its depth: compare with 1 MiB of a flat array. (A ratio, so
  // that slow builds, e.g. with sanitizers, do not fail it.)
  const Route& route = RouteOf("POST", "/v1/jobs");
  auto submit_of = [](const std::string& element) {
    std::string list;
    while (list.size() + element.size() + 64 < (1u << 20)) absl::StrAppend(&list, element, ",");
    list.pop_back();
    return absl::StrCat(R"({"type":"chat","input":{"x":[)", list, "]}}");
  };
  auto time_to_build = [&](const std::string& body) {
    aijobs::v1::SubmitJobRequest submit;
    absl::Time start = absl::Now();
    absl::Status s = BuildRequest(route, {}, "", body, {}, &submit);
    EXPECT_TRUE(s.ok()) << s;
    return absl::Now() - start;
  };
  absl::Duration flat = time_to_build(submit_of("0"));
  absl::Duration nested = time_to_build(submit_of(NestedArrays(kMaxJsonDepth - 3)));
  std::cerr << "1 MiB flat: " << flat << ", 1 MiB nested " << kMaxJsonDepth << " deep: " << nested
            << "\n";
  EXPECT_LT(nested, 4 * flat + absl::Milliseconds(50));
}
}  // namespace
}  // namespace aijobs::gateway
