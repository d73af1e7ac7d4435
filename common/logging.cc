#include "common/logging.h"

#include <cstdlib>

#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace aijobs {
namespace {

// %& in the pattern: the message with control characters escaped.
class EscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    for (char c : msg.payload) {
      const auto u = static_cast<unsigned char>(c);
      if (u >= 0x20 && u != 0x7f) {
        dest.push_back(c);
        continue;
      }
      dest.push_back('\\');
      switch (c) {
        case '\n':
          dest.push_back('n');
          break;
        case '\r':
          dest.push_back('r');
          break;
        case '\t':
          dest.push_back('t');
          break;
        default:
          dest.push_back('x');
          dest.push_back(kHex[u >> 4]);
          dest.push_back(kHex[u & 0xf]);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<EscapedMessage>();
  }
};

}  // namespace

std::unique_ptr<spdlog::formatter> NewLogFormatter() {
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  formatter->add_flag<EscapedMessage>('&').set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %n[%P] %^%l%$ %&");
  return formatter;
}

void InitLogging(const std::string& process_name) {
  auto logger = spdlog::stderr_logger_mt(process_name);
  logger->set_formatter(NewLogFormatter());
  const char* level = std::getenv("AIJOBS_LOG_LEVEL");
  logger->set_level(level != nullptr ? spdlog::level::from_str(level) : spdlog::level::info);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

}  // namespace aijobs
