#include "common/logging.h"

#include <memory>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "spdlog/logger.h"
#include "spdlog/sinks/ostream_sink.h"

namespace aijobs {
namespace {

std::string LogLine(const std::string& value) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out);
  spdlog::logger logger("test", sink);
  logger.set_formatter(NewLogFormatter());
  logger.info("worker {} connected", value);
  return out.str();
}

// Regression (issue 10, log forging): a worker id with a newline wrote a forged line into
// the scheduler log.
TEST(LoggingTest, ControlCharactersCannotForgeALine) {
  std::string line = LogLine("w1\n2026-12-03T00:00:00.000Z aijobs-scheduler[1] error forged");
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;  // one line, ended by the sink
  EXPECT_NE(line.find("w1\\n2026-12-03"), std::string::npos) << line;
  std::string escapes = LogLine(std::string("a\rb\tc\x1b[31md\x7f") + '\0' + "e");
  EXPECT_NE(escapes.find("a\\rb\\tc\\x1b[31md\\x7f\\x00e connected"), std::string::npos)
      << escapes;
}

TEST(LoggingTest, TextAndUtf8PassThrough) {
  std::string line = LogLine("w\xc3\xa9-1 \"quoted\"");
  EXPECT_NE(line.find(" info worker w\xc3\xa9-1 \"quoted\" connected\n"), std::string::npos) << line;
  EXPECT_EQ(line.rfind("20", 0), 0u) << line;  // starts with the UTC timestamp
}

}  // namespace
}  // namespace aijobs
