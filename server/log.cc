#include "server/log.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <utility>

#include <google/protobuf/stubs/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace gla {

namespace {
std::atomic<LogFormat> g_format{LogFormat::kText};

std::string Timestamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  return absl::StrFormat("%s.%03dZ", buf, ms);
}

const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
  }
  return "info";
}
}  // namespace

void SetLogFormat(LogFormat format) { g_format.store(format); }
LogFormat GetLogFormat() { return g_format.load(); }

std::string JsonEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) out += absl::StrFormat("\\u%04x", c);
        else out += static_cast<char>(c);
    }
  }
  return out;
}

void LogEvent(LogLevel level, std::string_view event, std::string_view text, std::initializer_list<LogField> fields) {
  std::string line;
  if (g_format.load() == LogFormat::kText) {
    line = std::string(text) + "\n";
  } else {
    line = absl::StrCat("{\"ts\":\"", Timestamp(), "\",\"level\":\"", LevelName(level), "\",\"event\":\"",
                        JsonEscape(event), "\",\"msg\":\"", JsonEscape(text), "\"");
    for (const LogField& f : fields) {
      absl::StrAppend(&line, ",\"", JsonEscape(f.key), "\":");
      std::visit(
          [&line](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::string_view>) {
              absl::StrAppend(&line, "\"", JsonEscape(v), "\"");
            } else if constexpr (std::is_same_v<T, bool>) {
              absl::StrAppend(&line, v ? "true" : "false");
            } else if constexpr (std::is_same_v<T, double>) {
              absl::StrAppend(&line, std::isfinite(v) ? absl::StrFormat("%.6g", v) : std::string("null"));
            } else {
              absl::StrAppend(&line, v);
            }
          },
          f.value);
    }
    line += "}\n";
  }
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace gla

namespace gla {

namespace {
void ProtobufLogHandler(google::protobuf::LogLevel level, const char* file, int line, const std::string& message) {
  static std::mutex mu;
  static std::chrono::steady_clock::time_point next;
  static int64_t left_out = 0;
  int64_t before = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    const auto now = std::chrono::steady_clock::now();
    if (level < google::protobuf::LOGLEVEL_FATAL && now < next) {
      ++left_out;
      return;
    }
    next = now + std::chrono::minutes(1);
    before = std::exchange(left_out, 0);
  }
  const std::string text = absl::StrCat("glad: protobuf: ", message, " (", file, ":", line, ")",
                                        before > 0 ? absl::StrCat("; ", before, " such lines left out before it") : "");
  LogEvent(level >= google::protobuf::LOGLEVEL_ERROR ? LogLevel::kWarning : LogLevel::kInfo, "protobuf", text,
           {{"error", std::string_view(message)}, {"left_out", before}});
}
}  // namespace

void RouteProtobufLogs() { google::protobuf::SetLogHandler(&ProtobufLogHandler); }

}  // namespace gla
