// Local RETURN_IF_ERROR / ASSIGN_OR_RETURN: Debian's Abseil (20220623) ships no status macros.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define GLA_CONCAT_INNER_(a, b) a##b
#define GLA_CONCAT_(a, b) GLA_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                     \
  do {                                            \
    ::absl::Status gla_status_ = (expr);          \
    if (!gla_status_.ok()) return gla_status_;    \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns x or returns the error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL_(GLA_CONCAT_(gla_statusor_, __LINE__), lhs, rexpr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                           \
  if (!tmp.ok()) return tmp.status();           \
  lhs = std::move(tmp).value()
