#include "common/sse_parser.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aijobs {
namespace {

using ::testing::ElementsAre;

struct Ev {
  std::string event, data, id;
  bool operator==(const Ev& o) const { return event == o.event && data == o.data && id == o.id; }
};

std::ostream& operator<<(std::ostream& os, const Ev& e) {
  return os << "{event=" << e.event << " data=\"" << e.data << "\" id=" << e.id << "}";
}

std::vector<Ev> ParseChunks(const std::vector<std::string>& chunks, SseParser* parser = nullptr) {
  SseParser local;
  SseParser& p = parser != nullptr ? *parser : local;
  std::vector<Ev> out;
  for (const std::string& c : chunks) {
    p.Feed(c, [&](const SseEvent& e) {
      out.push_back({e.event, e.data, e.id});
      return true;
    });
  }
  return out;
}

std::vector<Ev> Parse(const std::string& s) { return ParseChunks({s}); }

TEST(SseParserTest, DataLinesDispatchOnBlankLine) {
  EXPECT_THAT(Parse("data: {\"a\":1}\n\ndata: [DONE]\n\n"),
              ElementsAre(Ev{"message", "{\"a\":1}", ""}, Ev{"message", "[DONE]", ""}));
}

TEST(SseParserTest, NoEventWithoutBlankLine) {
  SseParser p;
  EXPECT_TRUE(ParseChunks({"data: x\n"}, &p).empty());
  EXPECT_TRUE(p.has_partial_event());
  EXPECT_THAT(ParseChunks({"\n"}, &p), ElementsAre(Ev{"message", "x", ""}));
  EXPECT_FALSE(p.has_partial_event());
}

TEST(SseParserTest, MultiLineDataIsJoinedWithNewlines) {
  EXPECT_THAT(Parse("data: one\ndata:two\ndata:  three\n\n"),
              ElementsAre(Ev{"message", "one\ntwo\n three", ""}));
}

TEST(SseParserTest, AllLineEndings) {
  EXPECT_THAT(Parse("data: a\r\n\r\ndata: b\r\rdata: c\n\ndata: d\r\n\n"),
              ElementsAre(Ev{"message", "a", ""}, Ev{"message", "b", ""}, Ev{"message", "c", ""},
                          Ev{"message", "d", ""}));
}

TEST(SseParserTest, CommentsEventIdAndUnknownFields) {
  EXPECT_THAT(Parse(": keep-alive\n\nevent: delta\nid: 7\nfoo: bar\ndata: x\n\n"
                    "data: y\n\nid\ndata: z\n\n"),
              ElementsAre(Ev{"delta", "x", "7"}, Ev{"message", "y", "7"}, Ev{"message", "z", ""}));
}

TEST(SseParserTest, EmptyDataDispatchesButBlankLinesAloneDoNot) {
  EXPECT_THAT(Parse("\n\n\nevent: e\n\ndata:\n\n"), ElementsAre(Ev{"message", "", ""}));
}

TEST(SseParserTest, FieldWithoutColonAndNoSpace) {
  EXPECT_THAT(Parse("data\n\ndata:x\n\n"),
              ElementsAre(Ev{"message", "", ""}, Ev{"message", "x", ""}));
}

TEST(SseParserTest, LeadingByteOrderMarkIsDropped) {
  EXPECT_THAT(Parse("\xEF\xBB\xBF"
                    "data: a\n\n"),
              ElementsAre(Ev{"message", "a", ""}));
  EXPECT_THAT(ParseChunks({"\xEF", "\xBB",
                           "\xBF"
                           "data: a\n\n"}),
              ElementsAre(Ev{"message", "a", ""}));
  // Only at the very start.
  EXPECT_THAT(Parse("data: a\n\n\xEF\xBB\xBF"
                    "data: b\n\n"),
              ElementsAre(Ev{"message", "a", ""}));
}

TEST(SseParserTest, RetryField) {
  SseParser p;
  ParseChunks({"retry: 1500\n\nretry: x\n\n"}, &p);
  EXPECT_EQ(p.retry_ms(), 1500);
}

TEST(SseParserTest, CallbackReturningFalseStopsTheChunk) {
  SseParser p;
  int seen = 0;
  EXPECT_FALSE(p.Feed("data: a\n\ndata: b\n\n", [&](const SseEvent&) {
    ++seen;
    return false;
  }));
  EXPECT_EQ(seen, 1);
}

// The same stream cut into two and three pieces at every byte position gives the same
// events: a CR at the end of one piece and LF at the start of the next is one line end,
// a multi-byte UTF-8 character may be split.
TEST(SseParserTest, ChunksSplitAtEveryBytePosition) {
  const std::string stream =
      "\xEF\xBB\xBF: hello\r\n"
      "data: {\"choices\":[{\"delta\":{\"content\":\"h\xC3\xA9llo\"}}]}\r\n\r\n"
      "event: ping\rdata: a\rdata: b\r\r"
      "id: 42\ndata:[DONE]\n\n";
  const std::vector<Ev> expected = Parse(stream);
  ASSERT_THAT(
      expected,
      ElementsAre(Ev{"message", "{\"choices\":[{\"delta\":{\"content\":\"h\xC3\xA9llo\"}}]}", ""},
                  Ev{"ping", "a\nb", ""}, Ev{"message", "[DONE]", "42"}));
  for (size_t i = 0; i <= stream.size(); ++i) {
    EXPECT_EQ(ParseChunks({stream.substr(0, i), stream.substr(i)}), expected) << "split at " << i;
    for (size_t j = i; j <= stream.size(); ++j) {
      ASSERT_EQ(ParseChunks({stream.substr(0, i), stream.substr(i, j - i), stream.substr(j)}),
                expected)
          << "split at " << i << " and " << j;
    }
  }
  // One byte at a time.
  std::vector<std::string> bytes;
  for (char c : stream) bytes.push_back(std::string(1, c));
  EXPECT_EQ(ParseChunks(bytes), expected);
}

}  // namespace
}  // namespace aijobs
