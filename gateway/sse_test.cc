#include "gateway/sse.h"

#include <gtest/gtest.h>

namespace aijobs::gateway {
namespace {

TEST(FormatSseEventTest, WritesEventIdAndDataThenABlankLine) {
  EXPECT_EQ(FormatSseEvent("output_delta", "7", R"({"text":"hi"})"),
            "event: output_delta\nid: 7\ndata: {\"text\":\"hi\"}\n\n");
}

TEST(FormatSseEventTest, OmitsEmptyEventAndId) {
  EXPECT_EQ(FormatSseEvent("", "", "x"), "data: x\n\n");
}

TEST(FormatSseEventTest, SplitsMultiLineDataIntoDataFields) {
  EXPECT_EQ(FormatSseEvent("e", "1", "a\nb\r\nc\rd"),
            "event: e\nid: 1\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
}

TEST(FormatSseEventTest, EmptyDataStillDispatches) {
  EXPECT_EQ(FormatSseEvent("e", "", ""), "event: e\ndata: \n\n");
}

TEST(FormatSseEventTest, NewlinesInEventOrIdCannotInjectFields) {
  EXPECT_EQ(FormatSseEvent("a\ndata: evil", "1\r\n2", "x"),
            "event: adata: evil\nid: 12\ndata: x\n\n");
}

TEST(FormatNdjsonTest, WrapsResultAndError) {
  EXPECT_EQ(FormatNdjsonResult(R"({"seq":"1"})"), "{\"result\":{\"seq\":\"1\"}}\n");
  EXPECT_EQ(FormatNdjsonError(R"({"code":5})"), "{\"error\":{\"code\":5}}\n");
}

TEST(SseHeartbeatTest, IsACommentFrame) {
  EXPECT_EQ(kSseHeartbeat.substr(0, 1), ":");
  EXPECT_EQ(kSseHeartbeat.substr(kSseHeartbeat.size() - 2), "\n\n");
}

}  // namespace
}  // namespace aijobs::gateway
