// Issue 21's correctness suite at the token level: every instance of the shared schemas
// (../shared/data/jsonschema) that compiles, written as a generator writes it (compact, members in
// schema order) and tokenized by the default model's tokenizer (models/gla-brown), is forced
// through the constraint token by token: each token must be in the mask the scheduler would apply
// (Matcher::Allowed, start-of-text trie for the first) and the text must end complete. Valid
// instances must be accepted, invalid ones refused. Also measures the masks' time (one core),
// over gla-brown's 8,000 pieces, a real 32,000-piece vocabulary (Mistral 7B's: the target)
// and a synthetic JSON-shaped 32,000 (the stress case).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/constraints/constraint.h"
#include "models/tokenizer.h"
#include "tests/support/json_canonical.h"

namespace gla {
namespace {

using testing::ordered_json;

struct Forced {
  bool accepted = false;
  int refused_at = -1;  // the token the mask refused (-1: none; the text may still be incomplete)
  std::vector<double> mask_us;
};

// The instance's tokens through the constraint, as the scheduler applies it: at_start[i] says
// whether token i is the output's first text (its bytes then lose a leading space).
Forced Force(const constraints::Constraint& c, const constraints::ConstraintVocabulary& vocab,
             const std::vector<int32_t>& ids, const std::vector<bool>& at_start) {
  Forced f;
  auto m = c.Start();
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    const auto t0 = std::chrono::steady_clock::now();
    const constraints::TokenMask mask = m->Allowed(vocab, at_start[i]);
    f.mask_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    if (!constraints::Allowed(mask, id)) {
      f.refused_at = static_cast<int>(i);
      return f;
    }
    if (!m->Advance(vocab.Bytes(id, at_start[i]))) {
      ADD_FAILURE() << "the mask allowed token " << id << " that the matcher then refused";
      return f;
    }
  }
  f.accepted = m->CanEnd();
  return f;
}

// How a vocabulary spells a text: its tokens and, for each, whether it is the output's first text;
// nullopt when the vocabulary cannot spell it.
struct Spelling {
  std::vector<int32_t> ids;
  std::vector<bool> at_start;
};
using Speller = std::function<std::optional<Spelling>(const std::string& text)>;

// gla-brown's own tokenizer (the first text is known by the streaming detokenizer, as the
// scheduler knows it): nullopt where decode(encode(text)) is another text (NFKC, unknown characters).
Speller TokenizerSpeller(const Tokenizer& tok) {
  return [&tok](const std::string& text) -> std::optional<Spelling> {
    auto ids = tok.Encode(text, /*add_bos=*/false);
    EXPECT_TRUE(ids.ok()) << ids.status();
    if (!ids.ok()) return std::nullopt;
    auto back = tok.Decode(*ids);
    if (!back.ok() || *back != text) return std::nullopt;
    Spelling s{*ids, {}};
    StreamingDetokenizer detok(tok);
    for (int32_t id : *ids) {
      s.at_start.push_back(detok.AtStart());
      detok.Push(id);
    }
    return s;
  };
}

// Longest match over a vocabulary's bytes (a vocabulary without its tokenizer model: the masks
// are over its pieces; which valid spelling the model would pick does not change what a mask is).
Speller LongestMatchSpeller(const constraints::TokenBytes& tb) {
  auto index = std::make_shared<std::unordered_map<std::string, int32_t>>();
  auto start_index = std::make_shared<std::unordered_map<std::string, int32_t>>();
  size_t longest = 0;
  for (size_t id = 0; id < tb.bytes.size(); ++id) {
    if (!tb.bytes[id].empty()) index->emplace(tb.bytes[id], static_cast<int32_t>(id));  // the first id wins
    if (!tb.at_start[id].empty()) start_index->emplace(tb.at_start[id], static_cast<int32_t>(id));
    longest = std::max(longest, tb.bytes[id].size());
  }
  return [index, start_index, longest](const std::string& text) -> std::optional<Spelling> {
    Spelling s;
    for (size_t at = 0; at < text.size();) {
      const auto& map = at == 0 ? *start_index : *index;
      size_t len = std::min(longest, text.size() - at);
      for (; len > 0; --len) {
        auto it = map.find(text.substr(at, len));
        if (it == map.end()) continue;
        s.ids.push_back(it->second);
        s.at_start.push_back(at == 0);
        break;
      }
      if (len == 0) return std::nullopt;
      at += len;
    }
    return s;
  };
}

struct Instance {
  std::string text;
  bool valid = false;
};
struct SchemaCase {
  std::string name, schema;
  std::vector<Instance> instances;
};

// Every shared schema file, its instances written as a generator writes them.
std::vector<SchemaCase> SharedSchemas() {
  const std::string dir = std::string(GLA_SOURCE_DIR) + "/../shared/data/jsonschema";
  std::vector<std::filesystem::path> paths;
  if (std::filesystem::is_directory(dir))
    for (const auto& entry : std::filesystem::directory_iterator(dir))
      if (entry.path().extension() == ".json") paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());
  std::vector<SchemaCase> cases;
  for (const std::filesystem::path& path : paths) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    const ordered_json file = ordered_json::parse(text.str(), nullptr, false);
    if (!file.is_object() || !file.contains("schema")) continue;
    SchemaCase c{path.filename().string(), file["schema"].dump(), {}};
    std::map<std::string, int> order;
    testing::PropertyOrder(file["schema"], &order);
    for (const ordered_json& t : file["tests"]) {
      ordered_json data = t["data"];
      testing::Canonical(data, &file["schema"], file["schema"], order);
      c.instances.push_back({data.dump(), t["valid"].get<bool>()});
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

// Forces every `every`-th schema's instances through `vocab` (whose first ids are tok's) and
// prints the errors and the mask times.
void ForceSharedSchemas(const std::vector<SchemaCase>& cases, const Speller& spell,
                        const constraints::ConstraintVocabulary& vocab, const char* vocab_name) {
  int compiled = 0, passing = 0, validation_errors = 0, invalidation_errors = 0, instances = 0;
  int unrepresentable = 0;  // valid texts the vocabulary cannot spell (decode(encode(text)) != text)
  std::vector<double> mask_us;
  // Every 20th schema in name order by default; GLA_SCHEMA_TOKENS_EVERY=1 forces all of them.
  const char* every_env = std::getenv("GLA_SCHEMA_TOKENS_EVERY");
  const size_t every = every_env != nullptr && std::atoi(every_env) > 0 ? std::atoi(every_env) : 20;
  for (size_t n = 0; n < cases.size(); n += every) {
    auto c = constraints::Constraint::Compile(constraints::Constraint::Kind::kJsonSchema, cases[n].schema);
    if (!c.ok()) continue;  // refusals: counted by json_schema_test
    ++compiled;
    bool all_right = true;
    for (const Instance& instance : cases[n].instances) {
      const std::optional<Spelling> spelled = spell(instance.text);
      if (!spelled) {  // no output can be this text
        if (instance.valid) ++unrepresentable;
        continue;
      }
      ++instances;
      const Forced f = Force(**c, vocab, spelled->ids, spelled->at_start);
      mask_us.insert(mask_us.end(), f.mask_us.begin(), f.mask_us.end());
      if (instance.valid && !f.accepted) {
        ++validation_errors, all_right = false;
        if (validation_errors <= 10) {
          std::string pieces;
          for (int i = std::max(0, f.refused_at - 3); i <= f.refused_at && i < static_cast<int>(spelled->ids.size()); ++i)
            pieces += "[" + vocab.Bytes(spelled->ids[i], spelled->at_start[i]) + "]";
          std::printf("[ detail ] valid instance refused at token %d %s: %s: %s\n", f.refused_at, pieces.c_str(),
                      cases[n].name.c_str(), instance.text.substr(0, 120).c_str());
        }
      }
      if (!instance.valid && f.accepted) {
        ++invalidation_errors, all_right = false;
        if (invalidation_errors <= 10)
          std::printf("[ detail ] invalid instance accepted: %s: %s\n", cases[n].name.c_str(),
                      instance.text.substr(0, 160).c_str());
      }
    }
    passing += all_right;
  }
  ASSERT_FALSE(mask_us.empty());
  std::sort(mask_us.begin(), mask_us.end());
  double sum = 0;
  for (double u : mask_us) sum += u;
  std::printf("[ measure ] token level (%s, %d-token vocabulary): %zu schemas, %d compiled, %d passing; "
              "%d instances forced: validation errors %d, invalidation errors %d; %d valid texts the vocabulary "
              "cannot spell\n",
              vocab_name, vocab.vocab_size(), cases.size(), compiled, passing, instances, validation_errors,
              invalidation_errors, unrepresentable);
  std::printf("[ measure ] mask per token (one core, %zu masks): mean %.1f us, p50 %.1f us, p99 %.1f us, max %.0f us\n",
              mask_us.size(), sum / mask_us.size(), mask_us[mask_us.size() / 2], mask_us[mask_us.size() * 99 / 100],
              mask_us.back());
  const auto cache = constraints::TerminalTokensCache::Shared().stats();
  std::printf("[ measure ] terminal tokens cache: %zu entries, %.1f MiB, %lld hits, %lld made\n", cache.entries,
              cache.bytes / 1048576.0, static_cast<long long>(cache.hits), static_cast<long long>(cache.misses));
  // Invalid text accepted: never. A valid instance refused: within the 0.5% (what a
  // generator writes is a subset of the valid JSON; docs/structured-output.md says which).
  EXPECT_LE(validation_errors * 200, instances);
  EXPECT_EQ(invalidation_errors, 0);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> DefaultTokenizer() {
  return Tokenizer::Load(std::string(GLA_SOURCE_DIR) + "/models/gla-brown/tokenizer.model");
}

// The default tokenizer's bytes per token, as the scheduler's vocabulary sees them.
constraints::TokenBytes BytesOf(const Tokenizer& tok) {
  constraints::TokenBytes tb;
  tok.TokenBytes(&tb.bytes, &tb.at_start, &tb.invisible_at_start);
  return tb;
}

TEST(JsonSchemaTokens, SharedInstancesForcedThroughTheDefaultTokenizer) {
  const std::vector<SchemaCase> cases = SharedSchemas();
  ASSERT_GT(cases.size(), 1500u) << "the shared schemas are missing";
  auto tok = DefaultTokenizer();
  ASSERT_TRUE(tok.ok()) << tok.status();
  constraints::TokenBytes tb = BytesOf(**tok);
  ForceSharedSchemas(cases, TokenizerSpeller(**tok), constraints::ConstraintVocabulary(std::move(tb)), "gla-brown");
}

// The target is stated at 32,000 tokens; no such tokenizer is here, so gla-brown's 8,000
// pieces get 24,000 more: the substrings of 2 to 8 bytes that occur most often in the shared
// instances' texts (ties by text), none already a piece. Instances are still tokenized by
// gla-brown (its ids keep their bytes), so the forced tokens are the same; the masks are made over
// all 32,000, of which the added ones are JSON-shaped (quotes, colons, digits, names): a harder
// vocabulary for the masks than a tokenizer trained on prose.
TEST(JsonSchemaTokens, SharedInstancesThroughA32kVocabulary) {
  const std::vector<SchemaCase> cases = SharedSchemas();
  ASSERT_GT(cases.size(), 1500u) << "the shared schemas are missing";
  auto tok = DefaultTokenizer();
  ASSERT_TRUE(tok.ok()) << tok.status();
  constraints::TokenBytes tb = BytesOf(**tok);
  std::set<std::string> have(tb.bytes.begin(), tb.bytes.end());
  std::unordered_map<std::string, int> counts;
  for (const SchemaCase& c : cases)
    for (const Instance& i : c.instances)
      for (size_t at = 0; at < i.text.size(); ++at)
        for (size_t len = 2; len <= 8 && at + len <= i.text.size(); ++len) ++counts[i.text.substr(at, len)];
  std::vector<std::pair<int, std::string>> frequent;
  for (auto& [text, count] : counts)
    if (!have.count(text)) frequent.emplace_back(-count, text);
  std::sort(frequent.begin(), frequent.end());
  ASSERT_GE(frequent.size() + tb.bytes.size(), 32000u);
  for (size_t i = 0; tb.bytes.size() < 32000; ++i) {
    tb.bytes.push_back(frequent[i].second);
    tb.at_start.push_back(frequent[i].second);
  }
  ForceSharedSchemas(cases, TokenizerSpeller(**tok), constraints::ConstraintVocabulary(std::move(tb)),
                     "gla-brown + 24,000 substrings");
}

// The target vocabulary: a real 32,000-piece SentencePiece BPE vocabulary of the kind GLA
// checkpoints ship (Mistral 7B v0.1's pieces, tests/data/vocabularies/README.md), instances spelled
// by longest match over it.
TEST(JsonSchemaTokens, SharedInstancesThroughMistralsVocabulary) {
  const std::vector<SchemaCase> cases = SharedSchemas();
  ASSERT_GT(cases.size(), 1500u) << "the shared schemas are missing";
  std::ifstream in(std::string(GLA_SOURCE_DIR) + "/tests/data/vocabularies/mistral-7b-v0.1.txt", std::ios::binary);
  ASSERT_TRUE(in) << "tests/data/vocabularies/mistral-7b-v0.1.txt is missing";
  constraints::TokenBytes tb;
  for (std::string piece; std::getline(in, piece);) {
    std::string bytes;
    if (piece.size() == 6 && piece.rfind("<0x", 0) == 0 && piece[5] == '>') {  // byte fallback
      bytes.push_back(static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
    } else if (piece != "<unk>" && piece != "<s>" && piece != "</s>") {
      for (size_t at = 0; at < piece.size();) {  // U+2581 (3 bytes) is a space
        if (piece.compare(at, 3, "\xE2\x96\x81") == 0) bytes.push_back(' '), at += 3;
        else bytes.push_back(piece[at++]);
      }
    }
    const bool spaced = piece.compare(0, 3, "\xE2\x96\x81") == 0;  // SentencePiece drops it at the start
    if (spaced && bytes == " ") tb.invisible_at_start.push_back(static_cast<int32_t>(tb.bytes.size()));
    tb.at_start.push_back(spaced ? bytes.substr(1) : bytes);
    tb.bytes.push_back(std::move(bytes));
  }
  ASSERT_EQ(tb.bytes.size(), 32000u);
  ASSERT_EQ(tb.bytes[259], "  ");  // "▁▁"
  const Speller spell = LongestMatchSpeller(tb);
  ForceSharedSchemas(cases, spell, constraints::ConstraintVocabulary(std::move(tb)), "Mistral 7B v0.1");
}

}  // namespace
}  // namespace gla
