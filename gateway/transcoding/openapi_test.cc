#include "gateway/transcoding/openapi.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aijobs/v1/job_service.pb.h"
#include "gateway/transcoding/testdata/transcoding_test.pb.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace aijobs::gateway {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

// Follows a path of object keys; fails the test (and returns a null Value) when one is missing.
const Value& At(const Value& root, std::initializer_list<const char*> keys) {
  static const Value* const kMissing = new Value();
  const Value* v = &root;
  std::string walked;
  for (const char* k : keys) {
    walked += std::string("/") + k;
    if (!v->has_struct_value() || !v->struct_value().fields().count(k)) {
      ADD_FAILURE() << "missing " << walked;
      return *kMissing;
    }
    v = &v->struct_value().fields().at(k);
  }
  return *v;
}

class OpenApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* pool = google::protobuf::DescriptorPool::generated_pool();
    ASSERT_NE(v1::GetJobRequest::descriptor(), nullptr);  // links job_service.pb.cc
    ASSERT_NE(transcoding_test::Message::descriptor(), nullptr);
    auto table = RouteTable::FromServices(
        {pool->FindServiceByName("aijobs.v1.JobService"),
         pool->FindServiceByName("aijobs.gateway.transcoding_test.Messaging")});
    ASSERT_TRUE(table.ok()) << table.status();
    json_ = BuildOpenApiJson(*table, "aijobs", "1.2.3");
    Struct parsed;
    auto s = google::protobuf::util::JsonStringToMessage(json_, &parsed);
    ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << json_;
    *doc_.mutable_struct_value() = parsed;
  }

  // The parameter named `name` of an operation, or null.
  const Value* Param(const Value& op, absl::string_view name) {
    for (const Value& p : At(op, {"parameters"}).list_value().values()) {
      if (p.struct_value().fields().at("name").string_value() == name) return &p;
    }
    return nullptr;
  }

  std::string json_;
  Value doc_;
};

TEST_F(OpenApiTest, HeaderAndInfo) {
  EXPECT_EQ(At(doc_, {"openapi"}).string_value(), "3.1.0");
  EXPECT_EQ(At(doc_, {"info", "title"}).string_value(), "aijobs");
  EXPECT_EQ(At(doc_, {"info", "version"}).string_value(), "1.2.3");
}

TEST_F(OpenApiTest, OutputIsDeterministicWithSortedKeys) {
  auto table = RouteTable::FromServices(
      {google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          "aijobs.v1.JobService")});
  ASSERT_TRUE(table.ok());
  std::string a = BuildOpenApiJson(*table, "t", "v");
  EXPECT_EQ(a, BuildOpenApiJson(*table, "t", "v"));
  size_t components = a.find("\"components\"");
  size_t info = a.find("\"info\"");
  size_t openapi = a.find("\"openapi\"");
  size_t paths = a.find("\"paths\"");
  EXPECT_LT(components, info);
  EXPECT_LT(info, openapi);
  EXPECT_LT(openapi, paths);
  EXPECT_NE(paths, std::string::npos);
  EXPECT_LT(a.find("\"/v1/jobs\""), a.find("\"/v1/jobs/{job_id}\""));
}

TEST_F(OpenApiTest, GetJobOperation) {
  const Value& op = At(doc_, {"paths", "/v1/jobs/{job_id}", "get"});
  EXPECT_EQ(At(op, {"operationId"}).string_value(), "JobService_GetJob");
  const Value* id = Param(op, "job_id");
  ASSERT_NE(id, nullptr);
  EXPECT_EQ(At(*id, {"in"}).string_value(), "path");
  EXPECT_TRUE(At(*id, {"required"}).bool_value());
  EXPECT_EQ(
      At(op, {"responses", "200", "content", "application/json", "schema", "$ref"}).string_value(),
      "#/components/schemas/aijobs.v1.Job");
  EXPECT_EQ(At(op, {"responses", "default", "content", "application/json", "schema", "$ref"})
                .string_value(),
            "#/components/schemas/google.rpc.Status");
}

TEST_F(OpenApiTest, VerbPathsAndBodies) {
  const Value& cancel = At(doc_, {"paths", "/v1/jobs/{job_id}:cancel", "post"});
  EXPECT_EQ(At(cancel, {"operationId"}).string_value(), "JobService_CancelJob");
  // body "*" with a path variable: the body schema omits job_id.
  const Value& props =
      At(cancel, {"requestBody", "content", "application/json", "schema", "properties"});
  EXPECT_TRUE(props.struct_value().fields().count("reason"));
  EXPECT_FALSE(props.struct_value().fields().count("jobId"));

  const Value& submit = At(doc_, {"paths", "/v1/jobs", "post"});
  EXPECT_EQ(
      At(submit, {"requestBody", "content", "application/json", "schema", "$ref"}).string_value(),
      "#/components/schemas/aijobs.v1.SubmitJobRequest");
  EXPECT_FALSE(submit.struct_value().fields().count("parameters"));
}

TEST_F(OpenApiTest, QueryParametersOfListJobs) {
  const Value& list = At(doc_, {"paths", "/v1/jobs", "get"});
  for (const char* name : {"state", "type", "page_size", "page_token"}) {
    const Value* p = Param(list, name);
    ASSERT_NE(p, nullptr) << name;
    EXPECT_EQ(At(*p, {"in"}).string_value(), "query");
  }
  EXPECT_EQ(At(*Param(list, "state"), {"schema", "$ref"}).string_value(),
            "#/components/schemas/aijobs.v1.JobState");
  EXPECT_EQ(At(*Param(list, "page_size"), {"schema", "type"}).string_value(), "integer");
}

TEST_F(OpenApiTest, NestedQueryParametersSkipPathFields) {
  const Value& get = At(doc_, {"paths", "/v1/messages/{message_id}/{sub.subfield}", "get"});
  EXPECT_NE(Param(get, "sub.subfield"), nullptr);
  EXPECT_EQ(At(*Param(get, "sub.subfield"), {"in"}).string_value(), "path");
  EXPECT_NE(Param(get, "sub.count"), nullptr);
  EXPECT_NE(Param(get, "revision"), nullptr);
  EXPECT_EQ(At(*Param(get, "revision"), {"in"}).string_value(), "query");
  EXPECT_EQ(At(*Param(get, "tags"), {"schema", "type"}).string_value(), "array");
  EXPECT_EQ(At(*Param(get, "wait"), {"schema", "type"}).string_value(), "string");
  EXPECT_EQ(Param(get, "message_id") != nullptr &&
                At(*Param(get, "message_id"), {"in"}).string_value() == "path",
            true);
  EXPECT_EQ(Param(get, "labels"), nullptr);  // maps cannot be set from the query
  EXPECT_EQ(Param(get, "extra"), nullptr);   // nor Struct
  // Additional bindings get distinct operation ids.
  EXPECT_EQ(At(doc_, {"paths", "/v1/users/{user_id}/messages/{message_id}", "get", "operationId"})
                .string_value(),
            "Messaging_GetMessage_2");
}

TEST_F(OpenApiTest, StreamingRouteDocumentsSseAndNdjson) {
  const Value& watch = At(doc_, {"paths", "/v1/jobs/{job_id}/events", "get"});
  const Value& content = At(watch, {"responses", "200", "content"});
  EXPECT_TRUE(content.struct_value().fields().count("text/event-stream"));
  EXPECT_EQ(At(content, {"application/x-ndjson", "schema", "properties", "result", "$ref"})
                .string_value(),
            "#/components/schemas/aijobs.v1.JobEvent");
  EXPECT_NE(Param(watch, "after_seq"), nullptr);
}

TEST_F(OpenApiTest, JobSchemaFollowsProto3JsonMapping) {
  const Value& job = At(doc_, {"components", "schemas", "aijobs.v1.Job", "properties"});
  EXPECT_EQ(At(job, {"id", "type"}).string_value(), "string");
  EXPECT_EQ(At(job, {"lastSeq", "type"}).string_value(), "string");  // int64
  EXPECT_EQ(At(job, {"lastSeq", "format"}).string_value(), "int64");
  EXPECT_EQ(At(job, {"maxAttempts", "type"}).string_value(), "integer");
  EXPECT_EQ(At(job, {"state", "$ref"}).string_value(), "#/components/schemas/aijobs.v1.JobState");
  EXPECT_EQ(At(job, {"input", "type"}).string_value(), "object");  // Struct
  EXPECT_EQ(At(job, {"createdAt", "format"}).string_value(), "date-time");
  EXPECT_EQ(At(job, {"timeout", "type"}).string_value(), "string");  // Duration
  EXPECT_EQ(At(job, {"labels", "additionalProperties", "type"}).string_value(), "string");
  EXPECT_EQ(At(job, {"error", "$ref"}).string_value(), "#/components/schemas/aijobs.v1.JobError");
  EXPECT_TRUE(At(doc_, {"components", "schemas", "aijobs.v1.JobError"}).has_struct_value());
  const Value& states = At(doc_, {"components", "schemas", "aijobs.v1.JobState", "enum"});
  std::vector<std::string> names;
  for (const Value& v : states.list_value().values()) names.push_back(v.string_value());
  EXPECT_THAT(names, ::testing::Contains("SUCCEEDED"));
  const Value& list =
      At(doc_, {"components", "schemas", "aijobs.v1.ListJobsResponse", "properties", "jobs"});
  EXPECT_EQ(At(list, {"type"}).string_value(), "array");
  EXPECT_EQ(At(list, {"items", "$ref"}).string_value(), "#/components/schemas/aijobs.v1.Job");
  // A oneof member (JobEvent.final_job) is described as such.
  EXPECT_THAT(At(doc_, {"components", "schemas", "aijobs.v1.JobEvent", "properties", "finalJob",
                        "description"})
                  .string_value(),
              ::testing::HasSubstr("oneof \"event\""));
  EXPECT_TRUE(At(doc_, {"components", "schemas", "google.rpc.Status", "properties", "details"})
                  .has_struct_value());
}

TEST_F(OpenApiTest, ResponseBodyFieldSchema) {
  const Value& list = At(doc_, {"paths", "/v1/messages", "get"});
  const Value& schema = At(list, {"responses", "200", "content", "application/json", "schema"});
  EXPECT_EQ(At(schema, {"type"}).string_value(), "array");
  EXPECT_EQ(At(schema, {"items", "$ref"}).string_value(),
            "#/components/schemas/aijobs.gateway.transcoding_test.Message");
}

}  // namespace
}  // namespace aijobs::gateway
