#include "gateway/transcoding/http_status.h"

#include <gtest/gtest.h>

#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace aijobs::gateway {
namespace {

TEST(HttpStatusTest, MapsEveryGrpcCodeLikeGrpcGateway) {
  using C = grpc::StatusCode;
  const std::pair<C, int> cases[] = {
      {C::OK, 200},
      {C::CANCELLED, 499},
      {C::UNKNOWN, 500},
      {C::INVALID_ARGUMENT, 400},
      {C::DEADLINE_EXCEEDED, 504},
      {C::NOT_FOUND, 404},
      {C::ALREADY_EXISTS, 409},
      {C::PERMISSION_DENIED, 403},
      {C::RESOURCE_EXHAUSTED, 429},
      {C::FAILED_PRECONDITION, 400},
      {C::ABORTED, 409},
      {C::OUT_OF_RANGE, 400},
      {C::UNIMPLEMENTED, 501},
      {C::INTERNAL, 500},
      {C::UNAVAILABLE, 503},
      {C::DATA_LOSS, 500},
      {C::UNAUTHENTICATED, 401},
  };
  for (const auto& [code, http] : cases) {
    EXPECT_EQ(HttpStatusFromGrpc(code), http) << "grpc code " << static_cast<int>(code);
    EXPECT_EQ(HttpStatusFromAbsl(static_cast<absl::StatusCode>(code)), http);
  }
  EXPECT_EQ(HttpStatusFromGrpc(static_cast<C>(99)), 500);
}

TEST(ErrorBodyJsonTest, HasCodeMessageAndDetailsInOrder) {
  EXPECT_EQ(ErrorBodyJson(5, "job abc not found"),
            R"({"code":5,"message":"job abc not found","details":[]})");
}

TEST(ErrorBodyJsonTest, EscapesTheMessage) {
  std::string message = "bad \"quote\" \\ back\nslash </script> \x01 caf\xc3\xa9";
  std::string json = ErrorBodyJson(3, message);
  google::protobuf::Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &parsed).ok()) << json;
  EXPECT_EQ(parsed.fields().at("message").string_value(), message);
  EXPECT_EQ(parsed.fields().at("code").number_value(), 3);
  EXPECT_TRUE(parsed.fields().at("details").has_list_value());
  EXPECT_EQ(json.find('\n'), std::string::npos) << json;
}

TEST(ErrorBodyJsonTest, FromAbslStatus) {
  EXPECT_EQ(ErrorBodyJson(absl::NotFoundError("gone")),
            R"({"code":5,"message":"gone","details":[]})");
}

TEST(WwwAuthenticate, SaysWhatWasWrongAsOneQuotedString) {
  EXPECT_EQ(WwwAuthenticateValue(false, "ignored"), "Bearer realm=\"aijobs\"");
  EXPECT_EQ(WwwAuthenticateValue(true, "token expired"),
            "Bearer realm=\"aijobs\", error=\"invalid_token\", "
            "error_description=\"token expired\"");
  EXPECT_EQ(WwwAuthenticateValue(true, "unknown kid \"k\\9\"\r\nX-Evil: 1"),
            "Bearer realm=\"aijobs\", error=\"invalid_token\", "
            "error_description=\"unknown kid 'k'9'  X-Evil: 1\"");
  EXPECT_EQ(WwwAuthenticateValue(true, std::string(500, 'a')).size(),
            WwwAuthenticateValue(true, std::string(200, 'a')).size());
}

}  // namespace
}  // namespace aijobs::gateway
