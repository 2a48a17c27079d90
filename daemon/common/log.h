// One line per event on stderr: "<level> <component>: <message>".
// The level threshold comes from config ("log_level"); debug lines cost one
// branch when disabled.
#pragma once

#include <cstdarg>

namespace memfed {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
// Parses "debug", "info", "warn", "error"; false if unknown.
bool parse_log_level(const char *name, LogLevel *out);

void log_line(LogLevel level, const char *component, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

} // namespace memfed

#define MF_LOG(level, comp, ...)                                               \
	do {                                                                   \
		if ((level) >= ::memfed::log_level())                          \
			::memfed::log_line((level), (comp), __VA_ARGS__);      \
	} while (0)
#define LOG_DEBUG(comp, ...) MF_LOG(::memfed::LogLevel::kDebug, comp, __VA_ARGS__)
#define LOG_INFO(comp, ...) MF_LOG(::memfed::LogLevel::kInfo, comp, __VA_ARGS__)
#define LOG_WARN(comp, ...) MF_LOG(::memfed::LogLevel::kWarn, comp, __VA_ARGS__)
#define LOG_ERROR(comp, ...) MF_LOG(::memfed::LogLevel::kError, comp, __VA_ARGS__)
