#include "gateway/transcoding/path_template.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace aijobs::gateway {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

PathTemplate MustParse(absl::string_view text) {
  auto t = PathTemplate::Parse(text);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : PathTemplate();
}

// Renders bindings as "a.b=value" strings for compact assertions.
std::vector<std::string> Render(const std::optional<std::vector<VariableBinding>>& bindings) {
  std::vector<std::string> out;
  if (!bindings) return {"<no match>"};
  for (const auto& b : *bindings) {
    std::string path;
    for (const auto& p : b.field_path) path += (path.empty() ? "" : ".") + p;
    out.push_back(path + "=" + b.value);
  }
  return out;
}

TEST(PathTemplateTest, SingleVariableFromHttpProto) {
  PathTemplate t = MustParse("/v1/messages/{message_id}");
  EXPECT_THAT(Render(t.Match("/v1/messages/123456")), ElementsAre("message_id=123456"));
  EXPECT_FALSE(t.Match("/v1/messages"));
  EXPECT_FALSE(t.Match("/v1/messages/"));
  EXPECT_FALSE(t.Match("/v1/messages/1/2"));
  EXPECT_FALSE(t.Match("/v2/messages/1"));
  EXPECT_FALSE(t.Match("v1/messages/1"));
  EXPECT_THAT(t.variable_field_paths(), ElementsAre(ElementsAre("message_id")));
  EXPECT_EQ(t.text(), "/v1/messages/{message_id}");
  EXPECT_EQ(t.verb(), "");
}

TEST(PathTemplateTest, NestedFieldPathFromHttpProto) {
  PathTemplate t = MustParse("/v1/messages/{message_id}/{sub.subfield}");
  EXPECT_THAT(Render(t.Match("/v1/messages/123456/foo")),
              ElementsAre("message_id=123456", "sub.subfield=foo"));
  EXPECT_THAT(t.variable_field_paths(),
              ElementsAre(ElementsAre("message_id"), ElementsAre("sub", "subfield")));
}

TEST(PathTemplateTest, AdditionalBindingExampleFromHttpProto) {
  PathTemplate t = MustParse("/v1/users/{user_id}/messages/{message_id}");
  EXPECT_THAT(Render(t.Match("/v1/users/me/messages/123456")),
              ElementsAre("user_id=me", "message_id=123456"));
  EXPECT_FALSE(t.Match("/v1/users/me/message/123456"));
}

TEST(PathTemplateTest, VariableWithSegments) {
  PathTemplate t = MustParse("/v1/{name=messages/*}");
  EXPECT_THAT(Render(t.Match("/v1/messages/abc")), ElementsAre("name=messages/abc"));
  EXPECT_FALSE(t.Match("/v1/shelves/abc"));
  EXPECT_FALSE(t.Match("/v1/messages/abc/def"));
}

TEST(PathTemplateTest, DeepWildcardVariable) {
  PathTemplate t = MustParse("/v1/{name=shelves/*/books/**}");
  EXPECT_THAT(Render(t.Match("/v1/shelves/s1/books/b/c/d")),
              ElementsAre("name=shelves/s1/books/b/c/d"));
  // ** matches zero segments too.
  EXPECT_THAT(Render(t.Match("/v1/shelves/s1/books")), ElementsAre("name=shelves/s1/books"));
  EXPECT_FALSE(t.Match("/v1/shelves/s1/notes/x"));
}

TEST(PathTemplateTest, BareWildcards) {
  PathTemplate t = MustParse("/v1/*/items/**");
  EXPECT_TRUE(t.Match("/v1/a/items"));
  EXPECT_TRUE(t.Match("/v1/a/items/x/y"));
  EXPECT_FALSE(t.Match("/v1//items"));  // '*' needs a non-empty segment
  EXPECT_TRUE(t.variable_field_paths().empty());
}

TEST(PathTemplateTest, VerbMustBePresent) {
  PathTemplate t = MustParse("/v1/jobs/{job_id}:cancel");
  EXPECT_EQ(t.verb(), "cancel");
  EXPECT_THAT(Render(t.Match("/v1/jobs/abc:cancel")), ElementsAre("job_id=abc"));
  EXPECT_FALSE(t.Match("/v1/jobs/abc"));
  EXPECT_FALSE(t.Match("/v1/jobs/abc:retry"));
  EXPECT_FALSE(t.Match("/v1/jobs/:cancel"));
  EXPECT_FALSE(t.Match("/v1/jobs/abc/x:cancel"));
}

TEST(PathTemplateTest, VerbAfterLiteralAndDeepWildcard) {
  PathTemplate lit = MustParse("/v1/messages:batchGet");
  EXPECT_EQ(lit.verb(), "batchGet");
  EXPECT_TRUE(lit.Match("/v1/messages:batchGet"));
  EXPECT_FALSE(lit.Match("/v1/messages"));
  PathTemplate deep = MustParse("/v1/{name=files/**}:download");
  EXPECT_THAT(Render(deep.Match("/v1/files/a/b.txt:download")), ElementsAre("name=files/a/b.txt"));
}

TEST(PathTemplateTest, TemplateWithoutVerbKeepsColonInValue) {
  // grpc-gateway re-attaches the verb for templates without one: the value includes it.
  PathTemplate t = MustParse("/v1/jobs/{job_id}");
  EXPECT_THAT(Render(t.Match("/v1/jobs/abc:cancel")), ElementsAre("job_id=abc:cancel"));
}

TEST(PathTemplateTest, SingleSegmentValuesAreFullyDecoded) {
  PathTemplate t = MustParse("/v1/messages/{message_id}");
  EXPECT_THAT(Render(t.Match("/v1/messages/a%20b%2Fc%3Ad")), ElementsAre("message_id=a b/c:d"));
  EXPECT_THAT(Render(t.Match("/v1/messages/a+b")), ElementsAre("message_id=a+b"));
  EXPECT_THAT(Render(t.Match("/v1/messages/%E2%82%AC")), ElementsAre("message_id=\u20ac"));
  EXPECT_FALSE(t.Match("/v1/messages/bad%2"));
  EXPECT_FALSE(t.Match("/v1/messages/bad%zz"));
}

TEST(PathTemplateTest, MultiSegmentValuesKeepEncodedSlash) {
  PathTemplate t = MustParse("/v1/{name=shelves/*/books/*}");
  EXPECT_THAT(Render(t.Match("/v1/shelves/a%2Fb/books/c%20d")),
              ElementsAre("name=shelves/a%2Fb/books/c d"));
  EXPECT_THAT(Render(t.Match("/v1/shelves/a%2fb/books/c")),
              ElementsAre("name=shelves/a%2fb/books/c"));
}

TEST(PathTemplateTest, LiteralCountAndOpenApiPath) {
  EXPECT_EQ(MustParse("/v1/jobs/{job_id}").literal_count(), 2);
  EXPECT_EQ(MustParse("/v1/jobs/{job_id}:cancel").literal_count(), 3);
  EXPECT_EQ(MustParse("/v1/{name=shelves/*}").literal_count(), 2);
  EXPECT_EQ(MustParse("/v1/jobs/{job_id}:cancel").OpenApiPath(), "/v1/jobs/{job_id}:cancel");
  EXPECT_EQ(MustParse("/v1/{name=shelves/*}/x").OpenApiPath(), "/v1/{name}/x");
  EXPECT_EQ(MustParse("/v1/messages/{message_id}/{sub.subfield}").OpenApiPath(),
            "/v1/messages/{message_id}/{sub.subfield}");
}

TEST(PathTemplateTest, RootTemplate) {
  PathTemplate t = MustParse("/");
  EXPECT_TRUE(t.Match("/"));
  EXPECT_FALSE(t.Match("/x"));
}

struct BadTemplate {
  const char* text;
  const char* error;
};

class MalformedTemplateTest : public ::testing::TestWithParam<BadTemplate> {};

TEST_P(MalformedTemplateTest, IsRejectedWithPosition) {
  auto t = PathTemplate::Parse(GetParam().text);
  ASSERT_FALSE(t.ok()) << GetParam().text;
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(GetParam().error));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MalformedTemplateTest,
    ::testing::Values(BadTemplate{"/v1/{x",
                                  "path template \"/v1/{x\": unterminated variable at offset 4"},
                      BadTemplate{"/v1/{x=a/*", "unterminated variable at offset 4"},
                      BadTemplate{"v1/x", "must start with '/' at offset 0"},
                      BadTemplate{"", "must start with '/'"},
                      BadTemplate{"/v1//x", "empty segment at offset 4"},
                      BadTemplate{"/v1/x/", "empty segment at offset 6"},
                      BadTemplate{"/v1/**/x", "'**' must be the last segment at offset 4"},
                      BadTemplate{"/v1/{a={b}}", "nested variable at offset 7"},
                      BadTemplate{"/v1/{1x}", "expected a field name at offset 5"},
                      BadTemplate{"/v1/{a.}", "expected a field name at offset 7"},
                      BadTemplate{"/v1/{a}/{a}", "variable {a} appears twice"},
                      BadTemplate{"/v1/x:", "empty verb at offset 5"},
                      BadTemplate{"/v1/a*b", "unexpected '*' at offset 5"},
                      BadTemplate{"/v1/*b", "unexpected 'b' after '*' at offset 5"},
                      BadTemplate{"/v1/{a}b", "unexpected 'b' at offset 7"}));

TEST(PercentDecodeTest, PlusIsSpaceOnlyWhenAsked) {
  EXPECT_EQ(PercentDecode("a+b%2B", false, true), "a b+");
  EXPECT_EQ(PercentDecode("a+b", false, false), "a+b");
  EXPECT_EQ(PercentDecode("%2F%2f", true, false), "%2F%2f");
  EXPECT_EQ(PercentDecode("%2F", false, false), "/");
  EXPECT_EQ(PercentDecode("%", false, false), std::nullopt);
}

}  // namespace
}  // namespace aijobs::gateway
