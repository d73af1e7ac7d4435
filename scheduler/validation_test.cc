// SubmitJob / job id input checks: each bad request is INVALID_ARGUMENT with a message that
// tells the caller what to fix.
#include "scheduler/validation.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/uuid.h"

namespace aijobs::scheduler {
namespace {

using ::testing::HasSubstr;

v1::SubmitJobRequest Request(const std::string& type, const std::string& input_json) {
  v1::SubmitJobRequest r;
  r.set_type(type);
  auto s = google::protobuf::util::JsonStringToMessage(input_json, r.mutable_input());
  EXPECT_TRUE(s.ok()) << s.ToString() << " in " << input_json;
  return r;
}

bool KnownBuiltins(const std::string& t) { return t == "chat" || t == "embed"; }

absl::Status Validate(const v1::SubmitJobRequest& r, SubmitLimits limits = SubmitLimits{}) {
  return ValidateSubmit(r, limits,
                        [](const std::string& t) { return KnownBuiltins(t) || t == "summarize"; });
}

constexpr char kChat[] = R"({"messages":[{"role":"user","content":"hi"}]})";

void ExpectInvalid(const absl::Status& s, const std::string& mentions) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(mentions));
}

TEST(ValidateSubmitTest, AcceptsWellFormedRequests) {
  EXPECT_TRUE(Validate(Request("chat", kChat)).ok());
  EXPECT_TRUE(Validate(Request("chat", R"({"messages":[{"role":"system","content":""},
      {"role":"user","content":"hello"}],"sim":{"tokens":3}})"))
                  .ok());
  EXPECT_TRUE(Validate(Request("embed", R"({"texts":["a","b"]})")).ok());
  // A worker-registered type has no built-in schema.
  EXPECT_TRUE(Validate(Request("summarize", R"({"anything":1})")).ok());
}

TEST(ValidateSubmitTest, UnknownTypeNamesTheType) {
  absl::Status s =
      ValidateSubmit(Request("translate", R"({"text":"x"})"), SubmitLimits{}, KnownBuiltins);
  ExpectInvalid(s, "\"translate\"");
  EXPECT_THAT(std::string(s.message()), HasSubstr("unknown"));
}

TEST(ValidateSubmitTest, RejectsBadTypeNames) {
  ExpectInvalid(Validate(Request("", "{}")), "type is required");
  for (const std::string bad : {"chat bot", "a/b", "x;drop", "caf\xc3\xa9", "tab\t"}) {
    ExpectInvalid(Validate(Request(bad, "{}")), "not a valid job type name");
  }
  ExpectInvalid(Validate(Request(std::string(65, 'a'), "{}")), "not a valid job type name");
  // 64 characters of the allowed alphabet is a valid name (then judged as unknown).
  absl::Status ok_name = Validate(Request(std::string(63, 'a') + "-", "{}"));
  ExpectInvalid(ok_name, "unknown job type");
  absl::Status dotted = ValidateSubmit(Request("v2.sum_mary-X", "{}"), SubmitLimits{},
                                       [](const std::string&) { return true; });
  EXPECT_TRUE(dotted.ok()) << dotted;
}

TEST(ValidateSubmitTest, ChatNeedsNonEmptyMessagesWithStringContent) {
  ExpectInvalid(Validate(Request("chat", "{}")), "input.messages");
  ExpectInvalid(Validate(Request("chat", R"({"messages":"hi"})")), "input.messages");
  ExpectInvalid(Validate(Request("chat", R"({"messages":{"role":"user"}})")), "input.messages");
  ExpectInvalid(Validate(Request("chat", R"({"messages":[]})")), "non-empty list");
  ExpectInvalid(Validate(Request("chat", R"({"messages":["hi"]})")), "input.messages[0]");
  ExpectInvalid(
      Validate(Request("chat", R"({"messages":[{"role":"user","content":"a"},{"role":"user"}]})")),
      "input.messages[1].content must be a string");
  ExpectInvalid(Validate(Request("chat", R"({"messages":[{"role":"user","content":42}]})")),
                "input.messages[0].content must be a string");
  ExpectInvalid(Validate(Request("chat", R"({"messages":[{"role":"user","content":null}]})")),
                "input.messages[0].content must be a string");
  ExpectInvalid(Validate(Request("chat", R"({"messages":[{"role":"user","content":["a","b"]}]})")),
                "input.messages[0].content must be a string");
}

// Regression (issue 9, bug 10): the scheduler and the worker validated chat input with rules
// that disagreed — the scheduler refused a message without a role that the worker would run
// (as "user"), and accepted a temperature, max_tokens or model the worker then refused after
// the job was queued and claimed. Both now parse with common/builtin_inputs.
TEST(ValidateSubmitTest, ChatInputIsCheckedWithTheWorkersOwnSchema) {
  EXPECT_TRUE(Validate(Request("chat", R"({"messages":[{"content":"hi"}]})")).ok());
  ExpectInvalid(Validate(Request("chat", R"({"messages":[{"role":"","content":"hi"}]})")),
                "input.messages[0].role");
  ExpectInvalid(
      Validate(Request("chat", R"({"messages":[{"role":"user","content":"hi"}],"temperature":5})")),
      "input.temperature must be a number between 0 and 2");
  ExpectInvalid(
      Validate(Request("chat", R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":-1})")),
      "input.max_tokens");
  ExpectInvalid(Validate(Request("chat", R"({"messages":[{"content":"hi"}],"model":5})")),
                "input.model must be a string");
  ExpectInvalid(Validate(Request("embed", R"({"texts":["a"],"model":[1]})")),
                "input.model must be a string");
}

TEST(ValidateSubmitTest, EmbedNeedsNonEmptyTexts) {
  ExpectInvalid(Validate(Request("embed", "{}")), "input.texts");
  ExpectInvalid(Validate(Request("embed", R"({"texts":[]})")), "input.texts");
  ExpectInvalid(Validate(Request("embed", R"({"texts":"one"})")), "input.texts");
}

// Regression (fixed): validation.cc (ValidateSubmit, embed branch, lines 71-76) checks only that
// input.texts is a non-empty list, although its own message says "a non-empty list of
// strings": {"texts":[1, {"a":2}]} is accepted and the job only fails later on the worker
// (INVALID_INPUT, after queueing and claiming). Fix: loop over the values and reject any
// whose kind_case() is not kStringValue, naming the index like the chat check does
// ("input.texts[1] must be a string").
TEST(ValidateSubmitTest, EmbedTextsMustBeStrings) {
  ExpectInvalid(Validate(Request("embed", R"({"texts":["ok", 1]})")), "input.texts");
  ExpectInvalid(Validate(Request("embed", R"({"texts":[{"a":2}]})")), "input.texts");
}

TEST(ValidateSubmitTest, RejectsInputOverTheLimit) {
  v1::SubmitJobRequest r = Request(
      "chat", R"({"messages":[{"role":"user","content":")" + std::string(500, 'x') + R"("}]})");
  const int64_t size = static_cast<int64_t>(r.input().ByteSizeLong());
  SubmitLimits limits;
  limits.max_input_bytes = size;
  EXPECT_TRUE(Validate(r, limits).ok()) << "exactly at the limit is allowed";
  limits.max_input_bytes = size - 1;
  absl::Status s = Validate(r, limits);
  ExpectInvalid(s, "over the limit");
  EXPECT_THAT(std::string(s.message()), HasSubstr(std::to_string(size - 1)));
  // The size check applies to every type, before the type is looked up.
  limits.max_input_bytes = 10;
  ExpectInvalid(ValidateSubmit(Request("summarize", R"({"t":"0123456789abcdef"})"), limits,
                               [](const std::string&) { return false; }),
                "over the limit");
}

// Regression (issue 10 item 4): a NUL in a text field that reaches PostgreSQL as text broke
// the group-commit statement ("malformed array literal") for every submit in the batch. It
// is the caller's input that is wrong: reject it up front, naming the field.
TEST(ValidateSubmitTest, RejectsNulAndInvalidUtf8InTextFields) {
  const std::string nul("a\0b", 3);
  v1::SubmitJobRequest r = Request("chat", kChat);
  r.set_idempotency_key(nul);
  ExpectInvalid(Validate(r), "idempotency_key must not contain NUL");
  r.set_idempotency_key("caf\xc3\xa9");  // UTF-8 is fine
  EXPECT_TRUE(Validate(r).ok());
  r.set_idempotency_key("caf\xe9");  // Latin-1 byte: not UTF-8
  ExpectInvalid(Validate(r), "idempotency_key must be valid UTF-8");
  r.clear_idempotency_key();

  v1::SubmitJobRequest key = Request("chat", kChat);
  (*key.mutable_labels())[nul] = "v";
  ExpectInvalid(Validate(key), "labels key");
  ExpectInvalid(Validate(key), "NUL");
  v1::SubmitJobRequest value = Request("chat", kChat);
  (*value.mutable_labels())["team"] = nul;
  ExpectInvalid(Validate(value), "labels[\"team\"]");
  v1::SubmitJobRequest bad_utf8 = Request("chat", kChat);
  (*bad_utf8.mutable_labels())["team"] = "\xff\xfe";
  ExpectInvalid(Validate(bad_utf8), "valid UTF-8");
  v1::SubmitJobRequest fine = Request("chat", kChat);
  (*fine.mutable_labels())["team"] = "caf\xc3\xa9 \xf0\x9f\x98\x80";
  EXPECT_TRUE(Validate(fine).ok());
}

// Returns an input whose nesting is `depth` levels (the input object itself is level 1),
// alternating objects and lists.
google::protobuf::Struct Nested(int depth) {
  google::protobuf::Struct root;
  google::protobuf::Value* slot = &(*root.mutable_fields())["v"];
  for (int level = 2; level <= depth; ++level) {
    if (level % 2 == 0) {
      slot = slot->mutable_list_value()->add_values();
    } else {
      slot = &(*slot->mutable_struct_value()->mutable_fields())["v"];
    }
  }
  slot->set_string_value("leaf");
  return root;
}

// Regression (issue 10 items 2/3): an input nested deeper than the read path can print was
// stored, and every later GetJob/WatchJob of that job failed.
TEST(ValidateSubmitTest, RejectsInputNestedDeeperThan32Levels) {
  v1::SubmitJobRequest r = Request("summarize", "{}");
  *r.mutable_input() = Nested(32);
  EXPECT_TRUE(Validate(r).ok()) << Validate(r);
  *r.mutable_input() = Nested(33);
  ExpectInvalid(Validate(r), "input nested deeper than 32 levels");
  *r.mutable_input() = Nested(200);
  ExpectInvalid(Validate(r), "input nested deeper than 32 levels");
  // Only objects, deep below a wide first level.
  google::protobuf::Struct deep;
  (*deep.mutable_fields())["a"].set_number_value(1);
  google::protobuf::Struct* s = (*deep.mutable_fields())["b"].mutable_struct_value();
  for (int i = 0; i < 40; ++i) s = (*s->mutable_fields())["x"].mutable_struct_value();
  *r.mutable_input() = deep;
  ExpectInvalid(Validate(r), "input nested deeper than 32 levels");

  v1::PutCachedResultRequest put;
  put.set_type("faq");
  *put.mutable_input() = Nested(33);
  (*put.mutable_result()->mutable_fields())["text"].set_string_value("x");
  put.mutable_ttl()->set_seconds(60);
  ExpectInvalid(ValidatePutCachedResult(put, SubmitLimits{}), "input nested deeper than 32");
  *put.mutable_input() = Nested(3);
  *put.mutable_result() = Nested(33);
  ExpectInvalid(ValidatePutCachedResult(put, SubmitLimits{}), "result nested deeper than 32");
}

// Labels are stored with the input (in the job's spec): they count toward max_input_bytes.
TEST(ValidateSubmitTest, LabelsCountTowardTheInputSizeLimit) {
  v1::SubmitJobRequest r = Request("chat", kChat);
  SubmitLimits limits;
  limits.max_input_bytes = static_cast<int64_t>(r.input().ByteSizeLong()) + 100;
  EXPECT_TRUE(Validate(r, limits).ok());
  (*r.mutable_labels())["big"] = std::string(200, 'l');
  absl::Status s = Validate(r, limits);
  ExpectInvalid(s, "over the limit");
  EXPECT_THAT(std::string(s.message()), HasSubstr("labels"));
  for (int i = 0; i < 50; ++i) (*r.mutable_labels())[absl::StrCat("k", i)] = "";
  r.mutable_labels()->erase("big");
  ExpectInvalid(Validate(r, limits), "over the limit");
}

TEST(ValidateSubmitTest, ChecksAttemptsKeyAndTimeout) {
  v1::SubmitJobRequest r = Request("chat", kChat);
  for (int ok : {0, 1, 3, 100}) {
    r.set_max_attempts(ok);
    EXPECT_TRUE(Validate(r).ok()) << ok;
  }
  for (int bad : {-1, 101}) {
    r.set_max_attempts(bad);
    ExpectInvalid(Validate(r), "max_attempts");
  }
  r.set_max_attempts(0);

  r.set_idempotency_key(std::string(256, 'k'));
  EXPECT_TRUE(Validate(r).ok());
  r.set_idempotency_key(std::string(257, 'k'));
  ExpectInvalid(Validate(r), "idempotency_key");
  r.clear_idempotency_key();

  r.mutable_timeout()->set_seconds(-5);
  ExpectInvalid(Validate(r), "timeout");
  // Regression (issue 10): 315576000000s was stored as 9223372036.85 s and 1 ns silently
  // became the default.
  r.mutable_timeout()->set_seconds(315576000000);
  ExpectInvalid(Validate(r), "timeout");
  r.mutable_timeout()->set_seconds(0);
  r.mutable_timeout()->set_nanos(1);
  ExpectInvalid(Validate(r), "timeout");
  r.mutable_timeout()->set_nanos(0);
  EXPECT_TRUE(Validate(r).ok());  // unset: the default
  r.mutable_timeout()->set_seconds(86400);
  EXPECT_TRUE(Validate(r).ok());
  r.mutable_timeout()->set_seconds(86401);
  ExpectInvalid(Validate(r), "timeout");
  r.mutable_timeout()->set_seconds(30);
  EXPECT_TRUE(Validate(r).ok());
}

// Regression (issue 10, item 6): priority was unbounded, so INT32_MAX jobs of an unserved
// type sat at the head of the queue.
TEST(ValidateSubmitTest, PriorityIsMinus1000To1000) {
  v1::SubmitJobRequest r = Request("chat", kChat);
  for (int ok : {-1000, -1, 0, 7, 1000}) {
    r.set_priority(ok);
    EXPECT_TRUE(Validate(r).ok()) << ok;
  }
  for (int bad : {-1001, 1001, 2147483647, -2147483647 - 1}) {
    r.set_priority(bad);
    ExpectInvalid(Validate(r), "priority must be between -1000 and 1000");
  }
}

TEST(ValidateSubmitTest, QueueTimeoutIsZeroOrOneSecondToSevenDays) {
  v1::SubmitJobRequest r = Request("chat", kChat);
  for (int64_t ok : {int64_t{0}, int64_t{1}, int64_t{3600}, int64_t{604800}}) {
    r.mutable_queue_timeout()->set_seconds(ok);
    EXPECT_TRUE(Validate(r).ok()) << ok;
  }
  for (int64_t bad : {int64_t{-1}, int64_t{604801}, int64_t{315576000000}}) {
    r.mutable_queue_timeout()->set_seconds(bad);
    ExpectInvalid(Validate(r), "queue_timeout");
  }
  r.mutable_queue_timeout()->set_seconds(0);
  r.mutable_queue_timeout()->set_nanos(500000000);
  ExpectInvalid(Validate(r), "queue_timeout");
}

// Regression (issue 10, item 6): a hello with 10,000 types wrote 10,000 rows and a 59 KB
// log line.
TEST(ValidateWorkerHelloTest, BoundsTypesSlotsAndWorkerId) {
  v1::WorkerHello h;
  h.set_worker_id("worker-1");
  h.add_job_types("chat");
  h.set_slots(8);
  EXPECT_TRUE(ValidateWorkerHello(h).ok());
  for (int i = 1; i < 64; ++i) h.add_job_types(absl::StrCat("type-", i));
  EXPECT_TRUE(ValidateWorkerHello(h).ok());
  h.add_job_types("one-too-many");
  ExpectInvalid(ValidateWorkerHello(h), "at most 64");
  h.clear_job_types();
  ExpectInvalid(ValidateWorkerHello(h), "at least one job type");
  h.add_job_types("bad type\n");
  ExpectInvalid(ValidateWorkerHello(h), "not a valid job type name");
  h.set_job_types(0, std::string(65, 't'));
  ExpectInvalid(ValidateWorkerHello(h), "not a valid job type name");
  h.set_job_types(0, "chat");
  h.set_slots(4097);
  ExpectInvalid(ValidateWorkerHello(h), "slots");
  h.set_slots(0);
  ExpectInvalid(ValidateWorkerHello(h), "slots");
  h.set_slots(8);
  h.set_worker_id(std::string(129, 'w'));
  ExpectInvalid(ValidateWorkerHello(h), "worker_id");
  h.set_worker_id(std::string("w\0", 2));
  ExpectInvalid(ValidateWorkerHello(h), "worker_id");
}

TEST(ValidateSubmitTest, CacheTtlIsZeroToThirtyDays) {
  v1::SubmitJobRequest r = Request("chat", kChat);
  r.mutable_cache()->mutable_ttl()->set_seconds(0);
  EXPECT_TRUE(Validate(r).ok());  // zero: no caching
  r.mutable_cache()->mutable_ttl()->set_seconds(30 * 24 * 3600);
  EXPECT_TRUE(Validate(r).ok());
  r.mutable_cache()->mutable_ttl()->set_nanos(1);
  ExpectInvalid(Validate(r), "cache.ttl");
  r.mutable_cache()->mutable_ttl()->set_seconds(-1);
  r.mutable_cache()->mutable_ttl()->set_nanos(0);
  ExpectInvalid(Validate(r), "cache.ttl");
}

v1::PutCachedResultRequest Put(const std::string& type, int64_t ttl_seconds) {
  v1::PutCachedResultRequest r;
  r.set_type(type);
  auto s = google::protobuf::util::JsonStringToMessage(kChat, r.mutable_input());
  EXPECT_TRUE(s.ok()) << s.ToString();
  (*r.mutable_result()->mutable_fields())["text"].set_string_value("hello");
  r.mutable_ttl()->set_seconds(ttl_seconds);
  return r;
}

TEST(ValidatePutCachedResultTest, NeedsTypeResultAndTtlOfOneSecondToThirtyDays) {
  EXPECT_TRUE(ValidatePutCachedResult(Put("chat", 60), SubmitLimits{}).ok());
  // Any well-formed type, registered or not.
  EXPECT_TRUE(ValidatePutCachedResult(Put("faq_answer", 60), SubmitLimits{}).ok());
  EXPECT_TRUE(ValidatePutCachedResult(Put("chat", 30 * 24 * 3600), SubmitLimits{}).ok());
  ExpectInvalid(ValidatePutCachedResult(Put("", 60), SubmitLimits{}), "type is required");
  ExpectInvalid(ValidatePutCachedResult(Put("a b", 60), SubmitLimits{}), "not a valid job type");
  ExpectInvalid(ValidatePutCachedResult(Put("chat", 0), SubmitLimits{}), "ttl");
  ExpectInvalid(ValidatePutCachedResult(Put("chat", -5), SubmitLimits{}), "ttl");
  ExpectInvalid(ValidatePutCachedResult(Put("chat", 31 * 24 * 3600), SubmitLimits{}), "ttl");
  v1::PutCachedResultRequest no_result = Put("chat", 60);
  no_result.clear_result();
  ExpectInvalid(ValidatePutCachedResult(no_result, SubmitLimits{}), "result is required");
  SubmitLimits small;
  small.max_input_bytes = 8;
  ExpectInvalid(ValidatePutCachedResult(Put("chat", 60), small), "over the limit");
}

TEST(ValidateJobIdTest, AcceptsOnlyUuids) {
  EXPECT_TRUE(ValidateJobId(NewUuid()).ok());
  EXPECT_TRUE(ValidateJobId("0B6C5C3E-1F0A-4C1E-9D5E-6A4F3B2C1D0E").ok());
  ExpectInvalid(ValidateJobId(""), "job_id is required");
  ExpectInvalid(ValidateJobId("42"), "\"42\" is not a UUID");
  ExpectInvalid(ValidateJobId(NewUuid() + "0"), "is not a UUID");
  ExpectInvalid(ValidateJobId("0b6c5c3e1f0a4c1e9d5e6a4f3b2c1d0e"), "is not a UUID");
  ExpectInvalid(ValidateJobId("zb6c5c3e-1f0a-4c1e-9d5e-6a4f3b2c1d0e"), "is not a UUID");
  // A huge id is cut in the message.
  absl::Status s = ValidateJobId(std::string(10000, 'a'));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(s.message().size(), 200u);
}

}  // namespace
}  // namespace aijobs::scheduler
