// Minimal `command --flag value` parsing: every flag must be known, every value present.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace gla {

struct ParsedArgs {
  std::string command;
  std::map<std::string, std::string> flags;

  bool Has(const std::string& name) const { return flags.count(name) > 0; }
  absl::StatusOr<std::string> Required(const std::string& name) const;
  absl::StatusOr<int> Int(const std::string& name, int default_value, int min_value) const;
  // A finite number in [min_value, max_value].
  absl::StatusOr<double> Double(const std::string& name, double default_value, double min_value,
                                double max_value) const;
};

// argv[1] is the command; `known` lists its flags (without "--"). `--flag=value` also works.
absl::StatusOr<ParsedArgs> ParseArgs(int argc, char** argv, const std::map<std::string, std::set<std::string>>& known);

// "1,2,3" -> {1, 2, 3}; error on anything that is not a comma-separated list of integers.
absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& text);

}  // namespace gla
