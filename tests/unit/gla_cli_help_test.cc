// gla-cli's help against its command table (clients/cli/commands.h): every command in
// `gla-cli --help`, every flag (with its default) in `gla-cli COMMAND --help`, the exit codes of
// help and of usage errors; and the table checks of clients/common/args.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

#include "clients/cli/commands.h"
#include "clients/common/args.h"
#include "clients/common/connection.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

testing::CommandResult RunCli(const std::string& args) { return testing::RunCommand(std::string(GLA_CLI_PATH) + " " + args); }

// The help line that documents --flag, or "" when there is none.
std::string FlagLine(const std::string& help, const FlagSpec& f) {
  const std::string start = "  --" + f.name + " " + f.value + " ";
  for (size_t at = help.find(start); at != std::string::npos; at = help.find(start, at + 1))
    if (at == 0 || help[at - 1] == '\n') return help.substr(at, help.find('\n', at) - at);
  return "";
}

TEST(GlaCliHelp, ListsEveryCommand) {
  const testing::CommandResult r = RunCli("--help");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const ProgramSpec program = CliProgram();
  ASSERT_GE(program.commands.size(), 16u);  // serving, fine-tuning and session commands
  for (const CommandSpec& c : program.commands)
    EXPECT_NE(r.out.find("\n  " + c.name + " "), std::string::npos) << c.name << " missing from\n" << r.out;
  EXPECT_NE(r.out.find("gla-cli COMMAND --help"), std::string::npos) << r.out;
}

TEST(GlaCliHelp, GenerateListsEveryFlagWithItsDefault) {
  const ProgramSpec program = CliProgram();
  const CommandSpec* generate = program.Find("generate");
  ASSERT_NE(generate, nullptr);
  const testing::CommandResult r = RunCli("generate --help");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("usage: gla-cli generate"), std::string::npos) << r.out;
  for (const char* must : {"addr", "token", "prompt", "max-new-tokens", "temperature", "seed", "timeout-s",
                           "json-schema", "json-object", "regex", "grammar"})
    EXPECT_NE(generate->Find(must), nullptr) << must;  // the table itself is whole
  for (const FlagSpec& f : generate->flags) {
    const std::string line = FlagLine(r.out, f);
    ASSERT_NE(line, "") << "--" << f.name << " missing from\n" << r.out;
    EXPECT_NE(line.find(f.help), std::string::npos) << line;
    if (!f.default_value.empty()) {
      EXPECT_NE(line.find("(default " + f.default_value + ")"), std::string::npos) << line;
    }
  }
}

TEST(GlaCliHelp, EveryCommandHasHelpForEachOfItsFlags) {
  const ProgramSpec program = CliProgram();
  for (const CommandSpec& c : program.commands) {
    // --help after other flags still answers with help, not with a call to glad.
    const testing::CommandResult r = RunCli(c.name + " --addr 127.0.0.1:1 --help");
    ASSERT_EQ(r.code, 0) << c.name << ": " << r.err;
    EXPECT_NE(r.out.find(c.summary), std::string::npos) << c.name;
    for (const FlagSpec& f : c.flags) EXPECT_NE(FlagLine(r.out, f), "") << c.name << " --" << f.name;
  }
}

TEST(GlaCliHelp, UsageErrorsExitTwoAndPointAtHelp) {
  const testing::CommandResult none = RunCli("");
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("missing command"), std::string::npos) << none.err;
  EXPECT_NE(none.err.find("\n  generate "), std::string::npos) << "no arguments: the usage too\n" << none.err;

  const testing::CommandResult unknown = RunCli("frobnicate --addr 127.0.0.1:1");
  EXPECT_EQ(unknown.code, 2);
  EXPECT_NE(unknown.err.find("unknown command 'frobnicate'"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("gla-cli --help"), std::string::npos) << unknown.err;
  EXPECT_EQ(std::count(unknown.err.begin(), unknown.err.end(), '\n'), 1) << unknown.err;

  const testing::CommandResult flag = RunCli("generate --addr 127.0.0.1:1 --prompt x --bogus 1");
  EXPECT_EQ(flag.code, 2);
  EXPECT_NE(flag.err.find("--bogus"), std::string::npos) << flag.err;
  EXPECT_NE(flag.err.find("gla-cli generate --help"), std::string::npos) << flag.err;

  const testing::CommandResult missing_value = RunCli("generate --addr");
  EXPECT_EQ(missing_value.code, 2) << missing_value.err;
  EXPECT_EQ(missing_value.out, "");
}

// A run that fails after parsing (no glad there) is exit 1, not a usage error.
TEST(GlaCliHelp, FailedCallExitsOne) {
  const testing::CommandResult r = RunCli("info --addr 127.0.0.1:1 --timeout-s 1");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("UNAVAILABLE"), std::string::npos) << r.err;
}

// Structured output's flags are checked before any call (nothing listens on port 1): one at most,
// and a file that cannot be read is named.
TEST(GlaCliHelp, ConstraintFlagsAreOneAtMostAndTheirFilesMustBeReadable) {
  for (const char* command : {"generate", "stream"}) {
    const std::string cli = std::string(command) + " --addr 127.0.0.1:1 --prompt x ";
    const testing::CommandResult two = RunCli(cli + "--regex a --json-object 1");
    EXPECT_EQ(two.code, 1) << two.err;
    EXPECT_NE(two.err.find("--json-schema, --json-object, --regex, --grammar: one at most"), std::string::npos) << two.err;
    const testing::CommandResult missing = RunCli(cli + "--json-schema /nonexistent/schema.json");
    EXPECT_EQ(missing.code, 1) << missing.err;
    EXPECT_NE(missing.err.find("--json-schema: cannot read /nonexistent/schema.json"), std::string::npos) << missing.err;
    const testing::CommandResult dir = RunCli(cli + "--grammar /");
    EXPECT_EQ(dir.code, 1) << dir.err;
    EXPECT_NE(dir.err.find("--grammar: cannot read /"), std::string::npos) << dir.err;
  }
}

// ParsedArgs holds the code to its table: reading an undeclared flag, or a default other than
// the one the help prints, is an INTERNAL error rather than a silent disagreement.
TEST(ClientArgs, CodeMustAgreeWithTheTable) {
  const ProgramSpec program = {"prog", "", {{"run", "", {{"steps", "N", "", "100"}, {"lr", "LR", "", "2e-3"}}}}, ""};
  std::string argv0 = "prog", cmd = "run";
  char* argv[] = {argv0.data(), cmd.data()};
  absl::StatusOr<ParsedArgs> a = ParseArgs(2, argv, program);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a->Int("steps", 100, 1), 100);
  EXPECT_EQ(*a->Double("lr", 2e-3, 0, 1), 2e-3);
  EXPECT_EQ(a->Int("steps", 50, 1).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(a->Double("lr", 1e-3, 0, 1).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(a->Int("batch", 1, 1).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(a->Required("model").status().code(), absl::StatusCode::kInternal);
}

TEST(ClientArgs, DefaultCommandAndHelp) {
  const ProgramSpec program = {"prog", "", {{"sweep", "", {{"addr", "A", "", ""}}}, {"other", "", {}}}, "sweep"};
  std::vector<std::string> words = {"prog", "--addr", "x:1"};
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  absl::StatusOr<ParsedArgs> a = ParseArgs(static_cast<int>(argv.size()), argv.data(), program);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->command, "sweep");
  EXPECT_EQ(a->flags.at("addr"), "x:1");
  EXPECT_FALSE(a->help);
  words = {"prog", "--help"};
  argv = {words[0].data(), words[1].data()};
  a = ParseArgs(2, argv.data(), program);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->help);
  EXPECT_EQ(a->spec, nullptr) << "the program's help, not sweep's";
}

// Client-side balancing: gla-cli (PickReplica) and the Python client (pick_replica) send a session to
// the same replica, for sessions and replica lists of every shape here (UTF-8 ids included); taking
// a replica away moves only the sessions it had.
// dns:///NAME:PORT stands for every address NAME resolves to (a headless Service's pods): both
// clients expand it to the same set, which they then hash sessions over.
TEST(ReplicaPick, BothClientsExpandADnsNameToTheSameReplicas) {
  auto list = ExpandReplicas({"dns:///localhost:50051", "10.0.0.9:7", "10.0.0.9:7"});
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_NE(std::find(list->begin(), list->end(), "127.0.0.1:50051"), list->end()) << absl::StrJoin(*list, ",");
  EXPECT_EQ(std::count(list->begin(), list->end(), "10.0.0.9:7"), 1) << "duplicates are one replica";
  for (const std::string& r : *list) EXPECT_EQ(r.find("dns:"), std::string::npos) << r;
  const std::string script = "import sys; sys.path.insert(0, '" + std::string(GLA_SOURCE_DIR) +
                             "/clients/python'); import gla_client as g; "
                             "print(','.join(g.expand_replicas('dns:///localhost:50051,10.0.0.9:7,10.0.0.9:7')))";
  FILE* p = popen(("python3 -c \"" + script + "\"").c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[4096];
  std::string out;
  for (size_t n; (n = fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  ASSERT_EQ(pclose(p), 0);
  EXPECT_EQ(absl::StripTrailingAsciiWhitespace(out), absl::StrJoin(*list, ","));
  EXPECT_EQ(ExpandReplicas({"dns:///no-such-host.invalid:50051"}).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ExpandReplicas({"dns:///localhost"}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ReplicaPick, TheCliAndThePythonClientAgreeAndARemovedReplicaMovesOnlyItsSessions) {
  const std::vector<std::string> replicas = {"10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051", "glad-3.glad:50051"};
  std::vector<std::string> sessions;
  for (int i = 0; i < 40; ++i) sessions.push_back("conversation-" + std::to_string(i));
  sessions.push_back("caf\xc3\xa9");
  std::string script = "import sys; sys.path.insert(0, '" + std::string(GLA_SOURCE_DIR) +
                       "/clients/python'); import gla_client as g; r = sys.argv[1].split(','); "
                       "print('\\n'.join(g.pick_replica(r, s) for s in sys.argv[2:]))";
  std::string command = "python3 -c \"" + script + "\" '";
  for (size_t i = 0; i < replicas.size(); ++i) command += (i ? "," : "") + replicas[i];
  command += "'";
  for (const std::string& s : sessions) command += " '" + s + "'";
  FILE* p = popen(command.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  ASSERT_EQ(pclose(p), 0) << command;
  std::vector<std::string> python = absl::StrSplit(absl::StripTrailingAsciiWhitespace(out), '\n');
  ASSERT_EQ(python.size(), sessions.size()) << out;
  std::map<std::string, int> per_replica;
  for (size_t i = 0; i < sessions.size(); ++i) {
    const std::string cpp = PickReplica(replicas, sessions[i]);
    EXPECT_EQ(cpp, python[i]) << sessions[i];
    ++per_replica[cpp];
  }
  EXPECT_EQ(per_replica.size(), replicas.size()) << "41 sessions all on a few replicas";
  const std::vector<std::string> fewer(replicas.begin(), replicas.end() - 1);
  for (const std::string& s : sessions) {
    const std::string before = PickReplica(replicas, s);
    if (before != replicas.back()) {
      EXPECT_EQ(PickReplica(fewer, s), before) << s << " moved without cause";
    }
  }
}

}  // namespace
}  // namespace gla
