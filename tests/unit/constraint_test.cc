// The compiled constraint and its per-sequence matcher (engine/constraints/constraint.h): the
// three kinds follow bytes all-or-nothing, clones are independent, masks come from the right trie
// (start of text or middle), refusals say why, and the cache compiles a text once.
#include "engine/constraints/constraint.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace gla::constraints {
namespace {

// A toy vocabulary: id 0 a control token, 1 " {" (a piece with a leading space), then pieces.
ConstraintVocabulary Toy() {
  TokenBytes t;
  t.bytes = {"", " {", "{", "}", "\"a\"", ":", "1", "12", " ", "x", "-"};
  t.at_start = t.bytes;
  t.at_start[1] = "{";  // the first piece of an output loses its leading space
  t.at_start[8] = "";   // a piece that is only that space adds nothing there: never allowed
  return ConstraintVocabulary(std::move(t));
}

std::vector<int> Ids(const TokenMask& m, int vocab) {
  std::vector<int> ids;
  for (int t = 0; t < vocab; ++t)
    if (Allowed(m, t)) ids.push_back(t);
  return ids;
}

TEST(Constraint, RegexFollowsBytesAllOrNothing) {
  auto c = Constraint::Compile(Constraint::Kind::kRegex, "[0-9]{3}-[0-9]{2}");
  ASSERT_TRUE(c.ok()) << c.status();
  auto m = (*c)->Start();
  EXPECT_FALSE(m->CanEnd());
  EXPECT_TRUE(m->Advance("12"));
  EXPECT_FALSE(m->Advance("3x"));  // refused as a whole: "3" was not taken either
  EXPECT_TRUE(m->Advance("3-"));
  auto fork = m->Clone();
  EXPECT_TRUE(m->Advance("45"));
  EXPECT_TRUE(m->CanEnd());
  EXPECT_FALSE(m->Advance("6"));
  EXPECT_FALSE(fork->CanEnd()) << "a clone moves on its own";
  EXPECT_TRUE(fork->Advance("9"));
}

// Continues: whether any byte may follow (the scheduler ends a complete text that cannot go on
// before spending a step on it), for both kinds of matcher, and it changes nothing.
TEST(Constraint, ContinuesSaysWhetherAnyByteMayFollow) {
  auto re = Constraint::Compile(Constraint::Kind::kRegex, "a[0-9]?");
  ASSERT_TRUE(re.ok()) << re.status();
  auto m = (*re)->Start();
  EXPECT_TRUE(m->Continues());
  ASSERT_TRUE(m->Advance("a"));
  EXPECT_TRUE(m->Continues() && m->CanEnd()) << "complete, and a digit may still follow";
  ASSERT_TRUE(m->Advance("7"));
  EXPECT_FALSE(m->Continues());
  EXPECT_TRUE(m->CanEnd());
  // Only bytes outside printable ASCII may start it (0x01, or é's UTF-8 lead byte 0xc3).
  auto g = Constraint::Compile(Constraint::Kind::kGrammar, "root ::= \"\\x01\" | \"\\u00e9\" \"z\"");
  ASSERT_TRUE(g.ok()) << g.status();
  auto gm = (*g)->Start();
  EXPECT_TRUE(gm->Continues()) << "the bytes past printable ASCII are tried too";
  ASSERT_TRUE(gm->Advance("\xc3\xa9"));
  EXPECT_TRUE(gm->Continues());
  EXPECT_FALSE(gm->CanEnd());
  ASSERT_TRUE(gm->Advance("z"));
  EXPECT_FALSE(gm->Continues());
  EXPECT_TRUE(gm->CanEnd());
  EXPECT_FALSE(gm->Advance("z")) << "Continues took nothing";
}

TEST(Constraint, MasksComeFromTheTrieOfWhereTheTextIs) {
  const ConstraintVocabulary v = Toy();
  auto c = Constraint::Compile(Constraint::Kind::kRegex, R"(\{"a":1[0-9]?\})");
  ASSERT_TRUE(c.ok()) << c.status();
  auto m = (*c)->Start();
  EXPECT_EQ(Ids(m->Allowed(v, /*at_start=*/true), v.vocab_size()), (std::vector<int>{1, 2}));
  EXPECT_EQ(Ids(m->Allowed(v, /*at_start=*/false), v.vocab_size()), (std::vector<int>{2}));
  ASSERT_TRUE(m->Advance(v.Bytes(1, true)));
  EXPECT_EQ(Ids(m->Allowed(v, false), v.vocab_size()), (std::vector<int>{4}));
  ASSERT_TRUE(m->Advance("\"a\":"));
  EXPECT_EQ(Ids(m->Allowed(v, false), v.vocab_size()), (std::vector<int>{6, 7}));
  ASSERT_TRUE(m->Advance("1"));
  EXPECT_EQ(Ids(m->Allowed(v, false), v.vocab_size()), (std::vector<int>{3, 6}));
  // The same state asked again is served from the constraint's cache: the same answer.
  EXPECT_EQ(Ids(m->Allowed(v, false), v.vocab_size()), (std::vector<int>{3, 6}));
}

TEST(Constraint, GrammarAndJsonSchemaFollowBytes) {
  auto g = Constraint::Compile(Constraint::Kind::kGrammar, R"(root ::= "yes" | "no" "pe"?)");
  ASSERT_TRUE(g.ok()) << g.status();
  auto m = (*g)->Start();
  EXPECT_FALSE(m->Advance("yo"));
  EXPECT_TRUE(m->Advance("no"));
  EXPECT_TRUE(m->CanEnd());
  EXPECT_TRUE(m->Advance("pe"));
  EXPECT_FALSE(m->Advance("s"));

  auto s = Constraint::Compile(Constraint::Kind::kJsonSchema,
                               R"({"type": "object", "properties": {"n": {"type": "integer", "maximum": 9}},
                                   "required": ["n"], "additionalProperties": false})");
  ASSERT_TRUE(s.ok()) << s.status();
  auto j = (*s)->Start();
  EXPECT_TRUE(j->Advance("{\"n\": "));
  EXPECT_FALSE(j->Advance("12"));
  EXPECT_TRUE(j->Advance("7"));
  EXPECT_FALSE(j->CanEnd());
  EXPECT_TRUE(j->Advance("}"));
  EXPECT_TRUE(j->CanEnd());

  auto o = Constraint::Compile(Constraint::Kind::kJsonObject, "");
  ASSERT_TRUE(o.ok()) << o.status();
  auto any = (*o)->Start();
  EXPECT_FALSE(any->Advance("[1]")) << "json_object: an object, not any value";
  EXPECT_TRUE(any->Advance(R"({"k": [1, {"x": null}], "s": "t"})"));
  EXPECT_TRUE(any->CanEnd());
}

TEST(Constraint, RefusalsSayWhy) {
  auto bad = Constraint::Compile(Constraint::Kind::kRegex, "(ab");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  auto empty = Constraint::Compile(Constraint::Kind::kGrammar, R"(root ::= "")");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("only the empty text"), std::string::npos) << empty.status();
  auto refused = Constraint::Compile(Constraint::Kind::kJsonSchema, R"J({"type": "string", "pattern": "^a(?=b)"})J");
  EXPECT_FALSE(refused.ok());
  auto not_json = Constraint::Compile(Constraint::Kind::kJsonSchema, "{");
  EXPECT_FALSE(not_json.ok());
}

TEST(Constraint, CacheCompilesATextOnceAndDropsTheLeastRecent) {
  ConstraintCache cache(2);
  auto a = cache.Get(Constraint::Kind::kRegex, "a+");
  auto a2 = cache.Get(Constraint::Kind::kRegex, "a+");
  ASSERT_TRUE(a.ok() && a2.ok());
  EXPECT_EQ(a->get(), a2->get());
  EXPECT_EQ(cache.hits(), 1);
  auto g = cache.Get(Constraint::Kind::kGrammar, "root ::= \"a+\"");  // another kind, another entry
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_NE(a->get(), g->get());
  EXPECT_FALSE(cache.Get(Constraint::Kind::kRegex, "(").ok());
  EXPECT_EQ(cache.size(), 2u) << "a failure is not cached";
  ASSERT_TRUE(cache.Get(Constraint::Kind::kRegex, "b").ok());  // drops the least recent: "a+"
  EXPECT_EQ(cache.size(), 2u);
  auto a3 = cache.Get(Constraint::Kind::kRegex, "a+");
  ASSERT_TRUE(a3.ok());
  EXPECT_NE(a->get(), a3->get()) << "compiled again after it was dropped";
}

}  // namespace
}  // namespace gla::constraints
