// Response-cache keys: equal requests share a key whatever their key order, any change of
// a value, the type or the tenant gives another key; and the worker-advert registry.
#include "scheduler/cache_key.h"

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <string>

#include "common/time_util.h"
#include "scheduler/cache_adverts.h"

namespace aijobs::scheduler {
namespace {

google::protobuf::Struct Json(const std::string& json) {
  google::protobuf::Struct s;
  auto status = google::protobuf::util::JsonStringToMessage(json, &s);
  EXPECT_TRUE(status.ok()) << status.ToString() << " in " << json;
  return s;
}

std::string Key(const std::string& json, const std::string& tenant = "default",
                const std::string& type = "chat") {
  return CacheKey(tenant, type, Json(json));
}

TEST(CacheKeyTest, IsSha256OfTheCanonicalText) {
  std::string key = Key(R"({"a": 1})");
  EXPECT_EQ(key.size(), 32u);
  // sha256('["default","chat",{"a":1}]'), computed independently with sha256sum.
  EXPECT_EQ(CanonicalCacheRequest("default", "chat", Json(R"({"a": 1})")),
            R"(["default","chat",{"a":1}])");
  EXPECT_EQ(HexString(key), "2aa01614f56f74b70b191c7ae4e1f1b714791adcd62fcf6cfa913e9c790aef0c");
}

TEST(CacheKeyTest, KeyOrderIsIrrelevantAtEveryDepth) {
  const std::string a =
      R"({"model": "m", "messages": [{"role": "user", "content": "hi"}],
          "sim": {"tokens": 5, "ttft_ms": 0}})";
  const std::string b =
      R"({"sim": {"ttft_ms": 0, "tokens": 5},
          "messages": [{"content": "hi", "role": "user"}], "model": "m"})";
  EXPECT_EQ(Key(a), Key(b));
  EXPECT_EQ(CanonicalCacheRequest("t", "chat", Json(a)),
            CanonicalCacheRequest("t", "chat", Json(b)));
  // Many keys: a map's iteration order differs between equal maps built differently.
  std::string forward = "{", backward = "{";
  for (int i = 0; i < 50; ++i) {
    forward += (i ? "," : "") + ("\"k" + std::to_string(i) + "\": " + std::to_string(i));
    backward += (i ? "," : "") + ("\"k" + std::to_string(49 - i) + "\": " + std::to_string(49 - i));
  }
  EXPECT_EQ(Key(forward + "}"), Key(backward + "}"));
}

TEST(CacheKeyTest, NumbersHaveOneForm) {
  EXPECT_EQ(Key(R"({"n": 1})"), Key(R"({"n": 1.0})"));
  EXPECT_EQ(Key(R"({"n": 100})"), Key(R"({"n": 1e2})"));
  EXPECT_EQ(Key(R"({"n": 0})"), Key(R"({"n": -0.0})"));
  EXPECT_NE(Key(R"({"n": 0.1})"), Key(R"({"n": 0.10000000000000002})"));
  EXPECT_NE(Key(R"({"n": 1})"), Key(R"({"n": "1"})"));
}

TEST(CacheKeyTest, AnyValueChangeChangesTheKey) {
  const std::string base = Key(R"({"messages": [{"role": "user", "content": "hi"}], "t": true})");
  for (const char* other : {
           R"({"messages": [{"role": "user", "content": "hi!"}], "t": true})",
           R"({"messages": [{"role": "system", "content": "hi"}], "t": true})",
           R"({"messages": [{"role": "user", "content": "hi"}], "t": false})",
           R"({"messages": [{"role": "user", "content": "hi"}], "t": null})",
           R"({"messages": [{"role": "user", "content": "hi"}]})",
           R"({"messages": [{"role": "user", "content": "hi"}], "t": true, "x": 1})",
           R"({"messages": [{"role": "user", "content": "hi"}, {}], "t": true})",
           R"({"messages": [], "t": true})",
           R"({"Messages": [{"role": "user", "content": "hi"}], "t": true})",
       }) {
    EXPECT_NE(Key(other), base) << other;
  }
  // List order matters (it is data, unlike object key order).
  EXPECT_NE(Key(R"({"l": [1, 2]})"), Key(R"({"l": [2, 1]})"));
  // Escaping leaves no ambiguity between a string's content and the structure around it.
  EXPECT_NE(Key(R"({"a": "x\",\"b\":\"y"})"), Key(R"({"a": "x", "b": "y"})"));
}

TEST(CacheKeyTest, TenantAndTypeArePartOfTheKey) {
  const std::string input = R"({"messages": [{"role": "user", "content": "hi"}]})";
  EXPECT_NE(Key(input, "tenant-a"), Key(input, "tenant-b"));
  EXPECT_NE(Key(input, "default", "chat"), Key(input, "default", "embed"));
  // Tenant and type are quoted, so their boundary cannot shift.
  EXPECT_NE(Key(input, "ab", "c"), Key(input, "a", "bc"));
}

TEST(CacheAdvertRegistryTest, MatchesTypeAndModelLatestWins) {
  CacheAdvertRegistry registry;
  google::protobuf::Struct no_model = Json(R"({"messages": []})");
  google::protobuf::Struct gpt = Json(R"({"model": "gpt", "messages": []})");
  EXPECT_EQ(registry.TtlFor("chat", no_model), absl::ZeroDuration());

  google::protobuf::RepeatedPtrField<v1::CacheAdvert> adverts;
  v1::CacheAdvert* a = adverts.Add();
  a->set_job_type("chat");
  a->set_model("gpt");
  *a->mutable_ttl() = ToProtoDuration(absl::Minutes(5));
  v1::CacheAdvert* b = adverts.Add();
  b->set_job_type("chat");  // model "": jobs naming no model
  *b->mutable_ttl() = ToProtoDuration(absl::Seconds(30));
  ASSERT_TRUE(ValidateCacheAdverts(adverts).ok());
  registry.Update(adverts);
  EXPECT_EQ(registry.TtlFor("chat", gpt), absl::Minutes(5));
  EXPECT_EQ(registry.TtlFor("chat", no_model), absl::Seconds(30));
  EXPECT_EQ(registry.TtlFor("embed", gpt), absl::ZeroDuration());
  EXPECT_EQ(registry.TtlFor("chat", Json(R"({"model": "other"})")), absl::ZeroDuration());

  // A later worker's advert for the same pair replaces it; ttl 0 withdraws it.
  google::protobuf::RepeatedPtrField<v1::CacheAdvert> later;
  v1::CacheAdvert* c = later.Add();
  c->set_job_type("chat");
  c->set_model("gpt");
  *c->mutable_ttl() = ToProtoDuration(absl::Hours(1));
  v1::CacheAdvert* d = later.Add();
  d->set_job_type("chat");
  registry.Update(later);
  EXPECT_EQ(registry.TtlFor("chat", gpt), absl::Hours(1));
  EXPECT_EQ(registry.TtlFor("chat", no_model), absl::ZeroDuration());
}

TEST(CacheAdvertRegistryTest, RejectsNegativeOrTooLongTtlNamingTheField) {
  google::protobuf::RepeatedPtrField<v1::CacheAdvert> adverts;
  adverts.Add()->set_job_type("chat");
  v1::CacheAdvert* bad = adverts.Add();
  bad->set_job_type("chat");
  *bad->mutable_ttl() = ToProtoDuration(absl::Hours(24 * 31));
  absl::Status s = ValidateCacheAdverts(adverts);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("cache_adverts[1].ttl"), absl::string_view::npos) << s;
  bad->mutable_ttl()->set_seconds(-1);
  bad->mutable_ttl()->set_nanos(0);
  EXPECT_EQ(ValidateCacheAdverts(adverts).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace aijobs::scheduler
