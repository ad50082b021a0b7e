#include "engine/constraints/regex_composition.h"

#include <algorithm>
#include <array>
#include <string>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"

namespace gla::constraints {

int RegexComposition::Atom(const Regex* re) {
  nodes_.push_back({Node::kAtom, false, re, {}});
  return num_nodes() - 1;
}

int RegexComposition::Sequence(std::vector<int> parts) {
  nodes_.push_back({Node::kSequence, false, nullptr, std::move(parts)});
  return num_nodes() - 1;
}

int RegexComposition::Alternatives(std::vector<int> alternatives, bool or_empty) {
  nodes_.push_back({Node::kAlternatives, or_empty, nullptr, std::move(alternatives)});
  return num_nodes() - 1;
}

int RegexComposition::Star(int node) {
  nodes_.push_back({Node::kStar, false, nullptr, {node}});
  return num_nodes() - 1;
}

namespace {
void Unite(std::vector<int>& into, const std::vector<int>& from) { into.insert(into.end(), from.begin(), from.end()); }
void SortUnique(std::vector<int>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}
}  // namespace

absl::StatusOr<Regex> RegexComposition::Build(int root, const RegexLimits& limits) const {
  // The root's subtree, children before parents (they were added first).
  std::vector<int> order;
  {
    if (root < 0 || root >= num_nodes()) return absl::InvalidArgumentError("regex composition: no such node");
    std::vector<bool> seen(nodes_.size(), false);
    std::vector<int> stack = {root};
    while (!stack.empty()) {
      const int n = stack.back();
      stack.pop_back();
      order.push_back(n);
      for (int c : nodes_[n].children) {
        // Children were added before their parent, each under one parent: a node shared by two
        // would be one position in two places (the follow sets would mix: a larger language).
        if (c < 0 || c >= n || seen[c])
          return absl::InvalidArgumentError("regex composition: not a tree (a child shared or added after its parent)");
        seen[c] = true;
        stack.push_back(c);
      }
    }
    std::sort(order.begin(), order.end());
  }
  // Glushkov: the positions are the atoms; per node whether it takes the empty text and which
  // positions can begin and end it; per position, the positions that can come after it.
  std::vector<int> position_of(nodes_.size(), -1);
  std::vector<const Regex*> atoms;
  for (int n : order) {
    if (nodes_[n].kind != Node::kAtom) continue;
    const Regex* re = nodes_[n].re;
    if (re->start() != Regex::kDead && re->Accepting(re->start()))
      return absl::InvalidArgumentError("regex composition: an atom matches the empty text");
    position_of[n] = static_cast<int>(atoms.size());
    atoms.push_back(re);
  }
  std::vector<bool> nullable(nodes_.size(), false);
  std::vector<std::vector<int>> first(nodes_.size()), last(nodes_.size()), follow(atoms.size());
  size_t follow_entries = 0;
  auto link = [&](const std::vector<int>& from, const std::vector<int>& to) {
    for (int p : from) Unite(follow[p], to);
    follow_entries += from.size() * to.size();
  };
  for (int n : order) {
    const Node& node = nodes_[n];
    switch (node.kind) {
      case Node::kAtom:
        first[n] = last[n] = {position_of[n]};
        break;
      case Node::kSequence: {
        bool all_nullable = true;
        for (int c : node.children) {
          if (all_nullable) Unite(first[n], first[c]);
          all_nullable = all_nullable && nullable[c];
        }
        nullable[n] = all_nullable;
        for (auto c = node.children.rbegin(); c != node.children.rend(); ++c) {
          Unite(last[n], last[*c]);
          if (!nullable[*c]) break;
        }
        for (size_t i = 0; i < node.children.size(); ++i)
          for (size_t j = i + 1; j < node.children.size(); ++j) {
            link(last[node.children[i]], first[node.children[j]]);
            if (!nullable[node.children[j]]) break;
          }
        break;
      }
      case Node::kAlternatives:
        nullable[n] = node.or_empty;
        for (int c : node.children) {
          Unite(first[n], first[c]);
          Unite(last[n], last[c]);
          nullable[n] = nullable[n] || nullable[c];
        }
        break;
      case Node::kStar:
        nullable[n] = true;
        first[n] = first[node.children[0]];
        last[n] = last[node.children[0]];
        link(last[n], first[n]);
        break;
    }
    SortUnique(first[n]);
    SortUnique(last[n]);
    if (follow_entries > (size_t{1} << 24))
      return absl::ResourceExhaustedError("pattern: a composed automaton with too many transitions between its parts");
  }
  for (std::vector<int>& f : follow) SortUnique(f);

  // A state of the result is a sorted set of elements offset[p] + q: atom p in its state q.
  std::vector<int> offset(atoms.size() + 1, 0), element_position;
  for (size_t p = 0; p < atoms.size(); ++p) {
    offset[p + 1] = offset[p] + atoms[p]->num_states();
    element_position.insert(element_position.end(), atoms[p]->num_states(), static_cast<int>(p));
  }
  std::vector<bool> is_last(atoms.size(), false);
  for (int p : last[root]) is_last[p] = true;
  // Byte classes: bytes every distinct atom puts in the same class of its own. For each atom's own
  // class, the joint classes it splits into: a state's moves come from its atoms' live transitions
  // (a literal's state has one), not from a look at every joint class.
  std::vector<const Regex*> distinct(atoms);
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  std::vector<int> distinct_of(atoms.size());
  for (size_t p = 0; p < atoms.size(); ++p)
    distinct_of[p] = static_cast<int>(std::lower_bound(distinct.begin(), distinct.end(), atoms[p]) - distinct.begin());
  std::array<uint8_t, 256> class_of{};
  int classes = 0;
  {
    std::unordered_map<std::string, int> ids;
    std::string signature(distinct.size(), '\0');
    for (int byte = 0; byte < 256; ++byte) {
      for (size_t a = 0; a < distinct.size(); ++a) signature[a] = static_cast<char>(distinct[a]->class_of_[byte]);
      class_of[byte] = static_cast<uint8_t>(ids.emplace(signature, static_cast<int>(ids.size())).first->second);
    }
    classes = static_cast<int>(ids.size());
  }
  std::vector<std::vector<std::vector<int>>> joint(distinct.size());  // [atom][its class] -> joint classes
  for (size_t a = 0; a < distinct.size(); ++a) {
    joint[a].resize(distinct[a]->classes_);
    std::vector<bool> seen(classes, false);
    for (int byte = 0; byte < 256; ++byte)
      if (!seen[class_of[byte]]) {
        seen[class_of[byte]] = true;
        joint[a][distinct[a]->class_of_[byte]].push_back(class_of[byte]);
      }
  }

  auto enter = [&](int p, std::vector<int>& set) {
    if (atoms[p]->start() != Regex::kDead) set.push_back(offset[p] + atoms[p]->start());
  };
  auto accepting_set = [&](const std::vector<int>& set) {
    for (int e : set) {
      const int p = element_position[e];
      if (is_last[p] && atoms[p]->Accepting(e - offset[p])) return true;
    }
    return false;
  };
  // The states' sets in one array (state d: elements[begin[d] .. begin[d + 1])), found by an
  // open-addressed table of state ids: no vector and no map node per state.
  std::vector<int> elements, begin = {0};
  std::vector<int32_t> table(64, -1);
  auto hash = [](const int* v, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<uint32_t>(v[i])) * 1099511628211ull;
    return static_cast<size_t>(h ^ (h >> 31));
  };
  auto same = [&](int d, const std::vector<int>& v) {
    return static_cast<size_t>(begin[d + 1] - begin[d]) == v.size() &&
           std::equal(v.begin(), v.end(), elements.begin() + begin[d]);
  };
  auto slot_of = [&](const std::vector<int>& v) {
    size_t h = hash(v.data(), v.size()) & (table.size() - 1);
    while (table[h] >= 0 && !same(table[h], v)) h = (h + 1) & (table.size() - 1);
    return h;
  };
  std::vector<bool> accepting;
  std::vector<int32_t> next;
  auto add_state = [&](const std::vector<int>& v) {
    const int d = static_cast<int>(begin.size()) - 1;
    elements.insert(elements.end(), v.begin(), v.end());
    begin.push_back(static_cast<int>(elements.size()));
    accepting.push_back(accepting_set(v));
    if ((begin.size() - 1) * 2 > table.size()) {  // keep the load under a half
      table.assign(table.size() * 2, -1);
      for (int k = 0; k <= d; ++k) {
        size_t h = hash(elements.data() + begin[k], begin[k + 1] - begin[k]) & (table.size() - 1);
        while (table[h] >= 0) h = (h + 1) & (table.size() - 1);
        table[h] = k;
      }
    } else {
      table[slot_of(v)] = d;
    }
    return d;
  };
  {
    std::vector<int> start;
    for (int p : first[root]) enter(p, start);
    SortUnique(start);
    add_state(start);
    if (nullable[root]) accepting[0] = true;
  }
  std::vector<std::vector<int>> moves(classes);
  std::vector<int> touched, targets;
  for (int d = 0; d < static_cast<int>(begin.size()) - 1; ++d) {
    next.resize(static_cast<size_t>(d + 1) * classes, Regex::kDead);
    touched.clear();
    for (int i = begin[d]; i < begin[d + 1]; ++i) {
      const int e = elements[i];
      const int p = element_position[e];
      const Regex& atom = *atoms[p];
      const int q = e - offset[p];
      for (int ac = 0; ac < atom.classes_; ++ac) {
        const int to = atom.next_[static_cast<size_t>(q) * atom.classes_ + ac];
        if (to == Regex::kDead) continue;
        targets.assign(1, offset[p] + to);
        if (atom.Accepting(to))
          for (int f : follow[p]) enter(f, targets);
        for (int c : joint[distinct_of[p]][ac]) {
          if (moves[c].empty()) touched.push_back(c);
          moves[c].insert(moves[c].end(), targets.begin(), targets.end());
        }
      }
    }
    for (int c : touched) {
      std::vector<int>& moved = moves[c];
      SortUnique(moved);
      const size_t slot = slot_of(moved);
      int to = table[slot];
      if (to < 0) {
        if (static_cast<int>(begin.size()) - 1 >= limits.max_dfa_states)
          return absl::ResourceExhaustedError(
              absl::StrCat("pattern: more than ", limits.max_dfa_states, " automaton states in a composition"));
        to = add_state(moved);
      }
      next[static_cast<size_t>(d) * classes + c] = to;
      moved.clear();
    }
  }
  return Regex::FromTable(next, classes, accepting, class_of);
}

}  // namespace gla::constraints
