// Structured output's ways in (issue 21), before the front door: the OpenAI HTTP body
// (response_format, vLLM's guided_*) and gla.v1.GenerateRequest's constraint oneof become
// GenerateCall::constraint with the field the client used in names.constraint; malformed fields are
// refused by name. The front door's compilation of the texts is tested end to end
// (openai_http_e2e_test, server_text_e2e_test).
#include <gtest/gtest.h>

#include <string>

#include "engine/constraints/regex.h"
#include "nlohmann/json.hpp"
#include "server/grpc_generate_call.h"
#include "server/http/completion_request.h"

namespace gla {
namespace {

using json = nlohmann::json;
using Kind = OutputConstraint::Kind;

absl::StatusOr<http::CompletionRequest> Completion(json extra) {
  json body = {{"model", "m"}, {"prompt", "p"}};
  body.update(extra);
  return http::ParseCompletionRequest(body.dump(), {});
}

absl::StatusOr<http::CompletionRequest> Chat(json extra) {
  json body = {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  body.update(extra);
  return http::ParseChatRequest(body.dump(), {});
}

// The one call's constraint and the field it is named by.
struct Taken {
  Kind kind;
  std::string text;
  std::string field;
};
Taken Take(const absl::StatusOr<http::CompletionRequest>& r) {
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok() || r->prompts.empty()) return {Kind::kNone, "", ""};
  const GenerateCall& c = r->prompts[0];
  return {c.constraint.kind, c.constraint.text, c.names.constraint};
}

// The refusal's message (INVALID_ARGUMENT expected).
std::string Refusal(const absl::StatusOr<http::CompletionRequest>& r) {
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  return std::string(r.status().message());
}

const json kSchema = {{"type", "object"},
                      {"properties", {{"b", {{"type", "integer"}}}, {"a", {{"type", "string"}}}}},
                      {"required", {"b", "a"}}};

TEST(StructuredRequest, ResponseFormatOnBothEndpoints) {
  for (auto parse : {Completion, Chat}) {
    EXPECT_EQ(Take(parse({{"response_format", {{"type", "text"}}}})).kind, Kind::kNone);
    const Taken object = Take(parse({{"response_format", {{"type", "json_object"}}}}));
    EXPECT_EQ(object.kind, Kind::kJsonObject);
    EXPECT_EQ(object.field, "response_format");
    for (const json& strict : {json(true), json(false), json(nullptr)}) {
      const Taken schema = Take(parse({{"response_format",
                                        {{"type", "json_schema"},
                                         {"json_schema",
                                          {{"name", "a_Name-1"}, {"schema", kSchema}, {"strict", strict},
                                           {"description", "what it is"}}}}}}));
      EXPECT_EQ(schema.kind, Kind::kJsonSchema);
      EXPECT_EQ(schema.field, "response_format.json_schema.schema");
      EXPECT_EQ(json::parse(schema.text), kSchema);
    }
  }
  // The client's member order is kept (the output's members follow the schema's order).
  const std::string ordered = Take(http::ParseCompletionRequest(
      R"({"model": "m", "prompt": "p", "response_format": {"type": "json_schema", "json_schema": {"name": "n",
          "schema": {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}}}}}})", {})).text;
  EXPECT_LT(ordered.find("\"b\""), ordered.find("\"a\"")) << ordered;
  EXPECT_LT(ordered.find("\"type\""), ordered.find("\"properties\"")) << ordered;
  // Every prompt of a completion carries it.
  auto two = Completion({{"prompt", {"x", "y"}}, {"guided_regex", "[0-9]+"}});
  ASSERT_TRUE(two.ok()) << two.status();
  ASSERT_EQ(two->prompts.size(), 2u);
  for (const GenerateCall& c : two->prompts) EXPECT_EQ(c.constraint.text, "[0-9]+");
}

TEST(StructuredRequest, ResponseFormatRefusalsNameTheField) {
  auto with_schema = [](json js) { return json{{"response_format", {{"type", "json_schema"}, {"json_schema", js}}}}; };
  const json named = {{"name", "n"}, {"schema", kSchema}};
  EXPECT_NE(Refusal(Completion({{"response_format", "json"}})).find("response_format: must be an object"), std::string::npos);
  EXPECT_NE(Refusal(Completion({{"response_format", {{"type", "yaml"}}}})).find("response_format.type"), std::string::npos);
  EXPECT_NE(Refusal(Completion({{"response_format", {{"type", "json_schema"}}}})).find("response_format.json_schema: is required"),
            std::string::npos);
  EXPECT_NE(Refusal(Completion({{"response_format", {{"type", "json_object"}, {"schema", kSchema}}}})).find("unknown field 'schema'"),
            std::string::npos);
  EXPECT_NE(Refusal(Completion(with_schema({{"schema", kSchema}}))).find("response_format.json_schema.name: is required"),
            std::string::npos);
  for (const char* bad_name : {"", "has space", "dot.ted", "ünï"})
    EXPECT_NE(Refusal(Completion(with_schema({{"name", bad_name}, {"schema", kSchema}}))).find("response_format.json_schema.name"),
              std::string::npos)
        << bad_name;
  EXPECT_TRUE(Completion(with_schema({{"name", std::string(64, 'x')}, {"schema", kSchema}})).ok());
  EXPECT_FALSE(Completion(with_schema({{"name", std::string(65, 'x')}, {"schema", kSchema}})).ok());
  EXPECT_NE(Refusal(Completion(with_schema({{"name", "n"}}))).find("response_format.json_schema.schema: is required"),
            std::string::npos);
  EXPECT_NE(Refusal(Completion(with_schema({{"name", "n"}, {"schema", "{}"}}))).find("response_format.json_schema.schema"),
            std::string::npos);
  json strict = named;
  strict["strict"] = "yes";
  EXPECT_NE(Refusal(Completion(with_schema(strict))).find("response_format.json_schema.strict"), std::string::npos);
  json extra = named;
  extra["format"] = 1;
  EXPECT_NE(Refusal(Completion(with_schema(extra))).find("unknown field 'format'"), std::string::npos);
}

TEST(StructuredRequest, GuidedFieldsAndTheirNames) {
  const Taken obj = Take(Completion({{"guided_json", kSchema}}));
  EXPECT_EQ(obj.kind, Kind::kJsonSchema);
  EXPECT_EQ(obj.field, "guided_json");
  EXPECT_EQ(json::parse(obj.text), kSchema);
  const Taken str = Take(Chat({{"guided_json", kSchema.dump()}}));
  EXPECT_EQ(str.kind, Kind::kJsonSchema);
  EXPECT_EQ(str.text, kSchema.dump());
  const Taken re = Take(Chat({{"guided_regex", "a|b"}}));
  EXPECT_EQ(re.kind, Kind::kRegex);
  EXPECT_EQ(re.text, "a|b");
  EXPECT_EQ(re.field, "guided_regex");
  const Taken g = Take(Completion({{"guided_grammar", "root ::= \"x\""}}));
  EXPECT_EQ(g.kind, Kind::kGrammar);
  EXPECT_EQ(g.field, "guided_grammar");
  EXPECT_EQ(Take(Completion({{"guided_regex", nullptr}})).kind, Kind::kNone);  // null: unset
  EXPECT_NE(Refusal(Completion({{"guided_regex", 5}})).find("guided_regex"), std::string::npos);
  EXPECT_NE(Refusal(Completion({{"guided_grammar", {"x"}}})).find("guided_grammar"), std::string::npos);
  EXPECT_NE(Refusal(Completion({{"guided_json", 5}})).find("guided_json"), std::string::npos);
  EXPECT_NE(Refusal(Completion({{"guided_choice", json::array()}})).find("guided_choice"), std::string::npos);
  EXPECT_NE(Refusal(Completion({{"guided_choice", {"a", 1}}})).find("guided_choice"), std::string::npos);
  EXPECT_NE(Refusal(Completion({{"guided_choice", {"a", ""}}})).find("guided_choice"), std::string::npos);
}

// guided_choice becomes a regex matching each choice exactly: regex metacharacters, backslashes
// and non-ASCII characters (the dialect's \xHH is a code point, not a byte) included.
TEST(StructuredRequest, GuidedChoiceMatchesExactlyTheChoices) {
  const std::vector<std::string> choices = {"yes", "a.b*c", "(x|y)", "[z]", "^$\\d{2}?+", "café", "日本", "\xF0\x9F\x98\x80"};
  const Taken t = Take(Chat({{"guided_choice", choices}}));
  EXPECT_EQ(t.kind, Kind::kRegex);
  EXPECT_EQ(t.field, "guided_choice");
  auto re = constraints::Regex::Compile(t.text);
  ASSERT_TRUE(re.ok()) << re.status() << "\n" << t.text;
  for (const std::string& c : choices) EXPECT_TRUE(re->Matches(c)) << c;
  for (const char* not_one : {"", "ye", "yess", "aXb*c", "abbbc", "x", "x|y", "z", "(x|y)(x|y)", "\\d{2}", "cafe",
                              "caf\xC3\x83\xC2\xA9", "日", "yes|a.b*c"})
    EXPECT_FALSE(re->Matches(not_one)) << not_one;
}

TEST(StructuredRequest, OneConstraintPerRequestNamingBoth) {
  const std::string both = Refusal(Completion({{"response_format", {{"type", "json_object"}}}, {"guided_regex", "a"}}));
  EXPECT_NE(both.find("guided_regex"), std::string::npos) << both;
  EXPECT_NE(both.find("response_format"), std::string::npos) << both;
  EXPECT_NE(both.find("one output constraint per request"), std::string::npos) << both;
  const std::string guided = Refusal(Chat({{"guided_choice", {"a"}}, {"guided_grammar", "root ::= \"a\""}}));
  EXPECT_NE(guided.find("guided_choice"), std::string::npos) << guided;
  EXPECT_NE(guided.find("guided_grammar"), std::string::npos) << guided;
  // response_format text is no constraint: it goes with a guided field.
  EXPECT_EQ(Take(Completion({{"response_format", {{"type", "text"}}}, {"guided_regex", "a"}})).kind, Kind::kRegex);
}

TEST(StructuredRequest, GrpcConstraintOneof) {
  auto from = [](auto set) {
    v1::GenerateRequest req;
    req.set_text("p");
    set(req);
    absl::StatusOr<GenerateCall> call = GenerateCallFromProto(req);
    EXPECT_TRUE(call.ok()) << call.status();
    return call.ok() ? Taken{call->constraint.kind, call->constraint.text, call->names.constraint} : Taken{};
  };
  EXPECT_EQ(from([](v1::GenerateRequest&) {}).kind, Kind::kNone);
  const Taken schema = from([](v1::GenerateRequest& r) { r.set_json_schema(R"({"type": "integer"})"); });
  EXPECT_EQ(schema.kind, Kind::kJsonSchema);
  EXPECT_EQ(schema.text, R"({"type": "integer"})");
  EXPECT_EQ(schema.field, "json_schema");
  const Taken re = from([](v1::GenerateRequest& r) { r.set_regex("[a-z]+"); });
  EXPECT_EQ(re.kind, Kind::kRegex);
  EXPECT_EQ(re.text, "[a-z]+");
  EXPECT_EQ(re.field, "regex");
  const Taken g = from([](v1::GenerateRequest& r) { r.set_grammar("root ::= \"a\""); });
  EXPECT_EQ(g.kind, Kind::kGrammar);
  EXPECT_EQ(g.field, "grammar");
  const Taken obj = from([](v1::GenerateRequest& r) { r.set_json_object(true); });
  EXPECT_EQ(obj.kind, Kind::kJsonObject);
  EXPECT_EQ(obj.field, "json_object");
  EXPECT_EQ(from([](v1::GenerateRequest& r) { r.set_json_object(false); }).kind, Kind::kNone);
  // A oneof keeps the last one set.
  EXPECT_EQ(from([](v1::GenerateRequest& r) { r.set_regex("a"), r.set_grammar("root ::= \"a\""); }).kind, Kind::kGrammar);
}

}  // namespace
}  // namespace gla
