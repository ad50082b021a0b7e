// glad's log lines, on stderr: the readable "glad: ..." lines (--log_format text, the default) or
// one JSON object per line (--log_format json) for log collectors:
//   {"ts":"2026-11-28T08:40:01.123Z","level":"info","event":"request","msg":"glad: request id=...",
//    "id":"req-1","prompt_tokens":4,...}
// Every line is written with one call (lines from different threads do not interleave).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

namespace gla {

enum class LogFormat { kText, kJson };
enum class LogLevel { kInfo, kWarning, kError };

// Set once at startup, before other threads log.
void SetLogFormat(LogFormat format);
LogFormat GetLogFormat();

struct LogField {
  std::string_view key;
  std::variant<std::string_view, int64_t, double, bool> value;
};

// `text` is the line of the text format (without the newline); `event` and `fields` are what the
// JSON format adds to it.
void LogEvent(LogLevel level, std::string_view event, std::string_view text, std::initializer_list<LogField> fields = {});

// JSON string escaping (quotes, backslashes, control characters), for the above and for tests.
std::string JsonEscape(std::string_view s);

}  // namespace gla

namespace gla {

// libprotobuf writes its own "[libprotobuf ERROR ...]" lines to stderr, one for every request
// that fails to parse (invalid UTF-8 in a string field, say): clients could fill the log, and the
// lines are not JSON. After this call they go through LogEvent (event "protobuf"), at most one
// a minute, the next one saying how many were left out.
void RouteProtobufLogs();

}  // namespace gla
