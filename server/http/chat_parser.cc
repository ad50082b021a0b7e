#include "server/http/chat_parser.h"

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "models/status_macros.h"
#include "server/http/chat_lexer.h"

namespace gla::chat {
namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  absl::StatusOr<Body> Run() {
    std::string end;
    ASSIGN_OR_RETURN(Body body, ParseBody({}, &end, 0));
    return body;
  }

 private:
  // Counts one level of nesting for as long as it lives.
  struct DepthGuard {
    explicit DepthGuard(int* d) : depth(d) { ++*depth; }
    ~DepthGuard() { --*depth; }
    int* depth;
  };

  const Token& Peek(size_t ahead = 0) const { return t_[std::min(pos_ + ahead, t_.size() - 1)]; }
  const Token& Next() {
    const Token& t = t_[pos_];
    if (pos_ + 1 < t_.size()) ++pos_;
    return t;
  }
  bool IsOp(std::string_view op, size_t ahead = 0) const {
    return Peek(ahead).kind == TokenKind::kOp && Peek(ahead).text == op;
  }
  bool IsName(std::string_view name, size_t ahead = 0) const {
    return Peek(ahead).kind == TokenKind::kName && Peek(ahead).text == name;
  }
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("chat template line ", Peek().line, ": ", std::string(what)));
  }
  std::string Describe(const Token& t) const {
    switch (t.kind) {
      case TokenKind::kData: return "text";
      case TokenKind::kVarBegin: return "'{{'";
      case TokenKind::kVarEnd: return "'}}'";
      case TokenKind::kBlockBegin: return "'{%'";
      case TokenKind::kBlockEnd: return "'%}'";
      case TokenKind::kName: return "'" + t.text + "'";
      case TokenKind::kString: return "a string";
      case TokenKind::kInt:
      case TokenKind::kFloat: return "a number";
      case TokenKind::kOp: return "'" + t.text + "'";
      case TokenKind::kEof: return "the end of the template";
    }
    return "?";
  }
  absl::Status Expect(TokenKind kind, std::string_view what) {
    if (Peek().kind != kind) return Error(absl::StrCat("expected ", std::string(what), ", got ", Describe(Peek())));
    Next();
    return absl::OkStatus();
  }
  absl::Status ExpectOp(std::string_view op) {
    if (!IsOp(op)) return Error(absl::StrCat("expected '", std::string(op), "', got ", Describe(Peek())));
    Next();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().kind != TokenKind::kName) return Error(absl::StrCat("expected a name, got ", Describe(Peek())));
    return Next().text;
  }
  absl::Status Enter() {
    if (depth_ >= kMaxParseDepth) return Error(absl::StrCat("template nested deeper than ", kMaxParseDepth));
    return absl::OkStatus();
  }

  // Statements up to one of `ends` ({% end... %}, {% else %}, ...), whose name is consumed and
  // stored in *end; the rest of that tag is the caller's. With no `ends`, up to the end.
  absl::StatusOr<Body> ParseBody(std::initializer_list<std::string_view> ends, std::string* end, int open_line) {
    RETURN_IF_ERROR(Enter());
    DepthGuard guard(&depth_);
    Body body;
    while (true) {
      const Token& tok = Peek();
      if (tok.kind == TokenKind::kEof) {
        if (ends.size() == 0) return body;
        return Error(absl::StrCat("unexpected end of template: the tag opened on line ", open_line, " needs '{% ",
                                  std::string(*std::prev(ends.end())), " %}'"));
      }
      if (tok.kind == TokenKind::kData) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kText;
        n->line = tok.line;
        n->text = Next().text;
        body.push_back(std::move(n));
      } else if (tok.kind == TokenKind::kVarBegin) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kOutput;
        n->line = Next().line;
        ASSIGN_OR_RETURN(n->expr, ParseExpression());
        RETURN_IF_ERROR(Expect(TokenKind::kVarEnd, "'}}'"));
        body.push_back(std::move(n));
      } else if (tok.kind == TokenKind::kBlockBegin) {
        if (Peek(1).kind == TokenKind::kName) {
          for (std::string_view e : ends) {
            if (Peek(1).text == e) {
              Next();
              *end = Next().text;
              return body;
            }
          }
        }
        Next();
        ASSIGN_OR_RETURN(NodePtr n, ParseStatement());
        body.push_back(std::move(n));
      } else {
        return Error(absl::StrCat("unexpected ", Describe(tok)));
      }
    }
  }

  absl::StatusOr<NodePtr> ParseStatement() {
    const int line = Peek().line;
    ASSIGN_OR_RETURN(std::string tag, ExpectName());
    auto n = std::make_unique<Node>();
    n->line = line;
    std::string end;
    if (tag == "if") {
      n->kind = Node::Kind::kIf;
      while (true) {
        ASSIGN_OR_RETURN(ExprPtr cond, ParseExpression());
        RETURN_IF_ERROR(Expect(TokenKind::kBlockEnd, "'%}'"));
        ASSIGN_OR_RETURN(Body body, ParseBody({"elif", "else", "endif"}, &end, line));
        n->conds.push_back(std::move(cond));
        n->bodies.push_back(std::move(body));
        if (end != "elif") break;
      }
      if (end == "else") {
        RETURN_IF_ERROR(Expect(TokenKind::kBlockEnd, "'%}'"));
        ASSIGN_OR_RETURN(n->else_body, ParseBody({"endif"}, &end, line));
      }
    } else if (tag == "for") {
      n->kind = Node::Kind::kFor;
      do {
        ASSIGN_OR_RETURN(std::string target, ExpectName());
        n->targets.push_back(std::move(target));
      } while (IsOp(",") && (Next(), true));
      if (!IsName("in")) return Error(absl::StrCat("expected 'in', got ", Describe(Peek())));
      Next();
      ASSIGN_OR_RETURN(n->expr, ParseOr());  // no conditional here: `if` filters the loop
      if (IsName("if")) {
        Next();
        ASSIGN_OR_RETURN(n->filter, ParseExpression());
      }
      if (IsName("recursive")) return Error("recursive loops are not supported");
      RETURN_IF_ERROR(Expect(TokenKind::kBlockEnd, "'%}'"));
      ++loops_;
      auto body = ParseBody({"else", "endfor"}, &end, line);
      --loops_;
      if (!body.ok()) return body.status();
      n->body = std::move(*body);
      if (end == "else") {
        RETURN_IF_ERROR(Expect(TokenKind::kBlockEnd, "'%}'"));
        ASSIGN_OR_RETURN(n->else_body, ParseBody({"endfor"}, &end, line));
      }
    } else if (tag == "set") {
      ASSIGN_OR_RETURN(n->target, ExpectName());
      if (IsOp(".")) {
        Next();
        ASSIGN_OR_RETURN(n->attr, ExpectName());
      }
      if (IsOp(",")) return Error("unpacking in 'set' is not supported");
      if (IsOp("=")) {
        Next();
        n->kind = Node::Kind::kSet;
        ASSIGN_OR_RETURN(n->expr, ParseTuple());
      } else {
        n->kind = Node::Kind::kSetBlock;
        RETURN_IF_ERROR(Expect(TokenKind::kBlockEnd, "'=' or '%}'"));
        ASSIGN_OR_RETURN(n->body, ParseBody({"endset"}, &end, line));
      }
    } else if (tag == "macro") {
      n->kind = Node::Kind::kMacro;
      n->macro = std::make_unique<MacroNode>();
      ASSIGN_OR_RETURN(n->macro->name, ExpectName());
      RETURN_IF_ERROR(ExpectOp("("));
      while (!IsOp(")")) {
        ASSIGN_OR_RETURN(std::string param, ExpectName());
        ExprPtr def;
        if (IsOp("=")) {
          Next();
          ASSIGN_OR_RETURN(def, ParseExpression());
        }
        n->macro->params.emplace_back(std::move(param), std::move(def));
        if (!IsOp(",")) break;
        Next();
      }
      RETURN_IF_ERROR(ExpectOp(")"));
      RETURN_IF_ERROR(Expect(TokenKind::kBlockEnd, "'%}'"));
      const int loops = loops_;
      loops_ = 0;  // a macro's body is not inside the loop that defines it
      auto body = ParseBody({"endmacro"}, &end, line);
      loops_ = loops;
      if (!body.ok()) return body.status();
      n->macro->body = std::move(*body);
    } else if (tag == "break" || tag == "continue") {
      if (loops_ == 0) return Error(absl::StrCat("'", tag, "' outside a loop"));
      n->kind = tag == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
    } else if (tag == "generation") {
      // transformers' AssistantTracker tag: marks assistant text for masks; renders its body.
      n->kind = Node::Kind::kScope;
      RETURN_IF_ERROR(Expect(TokenKind::kBlockEnd, "'%}'"));
      ASSIGN_OR_RETURN(n->body, ParseBody({"endgeneration"}, &end, line));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("chat template line ", line, ": unsupported tag '", tag, "'"));
    }
    RETURN_IF_ERROR(Expect(TokenKind::kBlockEnd, "'%}'"));
    return n;
  }

  ExprPtr Make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // `a, b` (as in `set x = a, b`) is a tuple, kept as a list.
  absl::StatusOr<ExprPtr> ParseTuple() {
    const int line = Peek().line;
    ASSIGN_OR_RETURN(ExprPtr first, ParseExpression());
    if (!IsOp(",")) return first;
    ExprPtr list = Make(Expr::Kind::kList, line);
    list->args.push_back(std::move(first));
    while (IsOp(",")) {
      Next();
      if (Peek().kind == TokenKind::kBlockEnd || Peek().kind == TokenKind::kVarEnd) break;
      ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
      list->args.push_back(std::move(item));
    }
    return list;
  }

  absl::StatusOr<ExprPtr> ParseExpression() {
    RETURN_IF_ERROR(Enter());
    DepthGuard guard(&depth_);
    ASSIGN_OR_RETURN(ExprPtr e, ParseOr());
    while (IsName("if")) {
      const int line = Next().line;
      ExprPtr c = Make(Expr::Kind::kCond, line);
      ASSIGN_OR_RETURN(ExprPtr cond, ParseOr());
      ExprPtr otherwise;
      if (IsName("else")) {
        Next();
        ASSIGN_OR_RETURN(otherwise, ParseExpression());
      }
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(cond));
      c->args.push_back(std::move(otherwise));
      e = std::move(c);
    }
    return e;
  }

  absl::StatusOr<ExprPtr> Binary(Expr::Kind kind, std::string op, ExprPtr a, ExprPtr b, int line) {
    ExprPtr e = Make(kind, line);
    e->name = std::move(op);
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ASSIGN_OR_RETURN(ExprPtr e, ParseAnd());
    while (IsName("or")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr r, ParseAnd());
      ASSIGN_OR_RETURN(e, Binary(Expr::Kind::kOr, "or", std::move(e), std::move(r), line));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParseAnd() {
    ASSIGN_OR_RETURN(ExprPtr e, ParseNot());
    while (IsName("and")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr r, ParseNot());
      ASSIGN_OR_RETURN(e, Binary(Expr::Kind::kAnd, "and", std::move(e), std::move(r), line));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      RETURN_IF_ERROR(Enter());
      DepthGuard guard(&depth_);
      ExprPtr e = Make(Expr::Kind::kNot, Next().line);
      ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      e->args.push_back(std::move(operand));
      return e;
    }
    return ParseCompare();
  }
  absl::StatusOr<ExprPtr> ParseCompare() {
    const int line = Peek().line;
    ASSIGN_OR_RETURN(ExprPtr first, ParseMath1());
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (Peek().kind == TokenKind::kOp && (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" ||
                                            Peek().text == ">" || Peek().text == "<=" || Peek().text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        Next();
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = "not in";
      } else {
        break;
      }
      if (!cmp) {
        cmp = Make(Expr::Kind::kCompare, line);
        cmp->args.push_back(std::move(first));
      }
      ASSIGN_OR_RETURN(ExprPtr r, ParseMath1());
      cmp->ops.push_back(std::move(op));
      cmp->args.push_back(std::move(r));
    }
    return cmp ? std::move(cmp) : std::move(first);
  }
  absl::StatusOr<ExprPtr> ParseMath1() {
    ASSIGN_OR_RETURN(ExprPtr e, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      const Token& op = Next();
      std::string name = op.text;
      ASSIGN_OR_RETURN(ExprPtr r, ParseConcat());
      ASSIGN_OR_RETURN(e, Binary(Expr::Kind::kBinary, std::move(name), std::move(e), std::move(r), op.line));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParseConcat() {
    ASSIGN_OR_RETURN(ExprPtr e, ParseMath2());
    while (IsOp("~")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr r, ParseMath2());
      ASSIGN_OR_RETURN(e, Binary(Expr::Kind::kBinary, "~", std::move(e), std::move(r), line));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParseMath2() {
    ASSIGN_OR_RETURN(ExprPtr e, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& op = Next();
      std::string name = op.text;
      ASSIGN_OR_RETURN(ExprPtr r, ParsePow());
      ASSIGN_OR_RETURN(e, Binary(Expr::Kind::kBinary, std::move(name), std::move(e), std::move(r), op.line));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParsePow() {
    ASSIGN_OR_RETURN(ExprPtr e, ParseUnary(true));
    while (IsOp("**")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr r, ParseUnary(true));
      ASSIGN_OR_RETURN(e, Binary(Expr::Kind::kBinary, "**", std::move(e), std::move(r), line));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    RETURN_IF_ERROR(Enter());
    DepthGuard guard(&depth_);
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      const Token& op = Next();
      e = Make(op.text == "-" ? Expr::Kind::kNeg : Expr::Kind::kPos, op.line);
      ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      e->args.push_back(std::move(operand));
    } else {
      ASSIGN_OR_RETURN(e, ParsePrimary());
    }
    ASSIGN_OR_RETURN(e, ParsePostfix(std::move(e)));
    if (with_filter) {
      while (true) {
        if (IsOp("|")) {
          const int line = Next().line;
          ExprPtr f = Make(Expr::Kind::kFilter, line);
          ASSIGN_OR_RETURN(f->name, ExpectName());
          f->args.push_back(std::move(e));
          if (IsOp("(")) RETURN_IF_ERROR(ParseArgs(f.get()));
          e = std::move(f);
        } else if (IsName("is")) {
          const int line = Next().line;
          ExprPtr t = Make(Expr::Kind::kTest, line);
          if (IsName("not")) {
            Next();
            t->negated = true;
          }
          ASSIGN_OR_RETURN(t->name, ExpectName());
          t->args.push_back(std::move(e));
          if (IsOp("(")) {
            RETURN_IF_ERROR(ParseArgs(t.get()));
          } else if ((Peek().kind == TokenKind::kName || Peek().kind == TokenKind::kString ||
                      Peek().kind == TokenKind::kInt || Peek().kind == TokenKind::kFloat || IsOp("(") || IsOp("[") ||
                      IsOp("{")) &&
                     !IsName("else") && !IsName("or") && !IsName("and")) {
            if (IsName("is")) return Error("tests cannot be chained with 'is'");
            ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
            ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
            t->args.push_back(std::move(arg));
          }
          e = std::move(t);
        } else if (IsOp("(")) {
          ExprPtr c = Make(Expr::Kind::kCall, Peek().line);
          c->args.push_back(std::move(e));
          RETURN_IF_ERROR(ParseArgs(c.get()));
          e = std::move(c);
        } else {
          break;
        }
      }
    }
    return e;
  }

  // `(a, b, key=c)` into e->args (after what is there) and e->kwargs.
  absl::Status ParseArgs(Expr* e) {
    RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      if (Peek().kind == TokenKind::kName && IsOp("=", 1)) {
        std::string key = Next().text;
        Next();
        ASSIGN_OR_RETURN(ExprPtr v, ParseExpression());
        e->kwargs.emplace_back(std::move(key), std::move(v));
      } else {
        if (!e->kwargs.empty()) return Error("positional argument after a keyword argument");
        if (IsOp("*") || IsOp("**")) return Error("'*' and '**' arguments are not supported");
        ASSIGN_OR_RETURN(ExprPtr v, ParseExpression());
        e->args.push_back(std::move(v));
      }
      if (!IsOp(",")) break;
      Next();
    }
    return ExpectOp(")");
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr e) {
    while (true) {
      if (IsOp(".")) {
        const int line = Next().line;
        if (Peek().kind == TokenKind::kInt) {  // foo.0 is foo[0]
          ExprPtr item = Make(Expr::Kind::kItem, line);
          ExprPtr index = Make(Expr::Kind::kLiteral, line);
          index->literal = Value::Int(Next().int_value);
          item->args.push_back(std::move(e));
          item->args.push_back(std::move(index));
          e = std::move(item);
          continue;
        }
        ExprPtr attr = Make(Expr::Kind::kAttr, line);
        ASSIGN_OR_RETURN(attr->name, ExpectName());
        attr->args.push_back(std::move(e));
        e = std::move(attr);
      } else if (IsOp("[")) {
        const int line = Next().line;
        ExprPtr start;
        if (!IsOp(":")) {
          ASSIGN_OR_RETURN(start, ParseExpression());
        }
        if (IsOp(":")) {
          Next();
          ExprPtr s = Make(Expr::Kind::kSlice, line);
          ExprPtr stop, step;
          if (!IsOp(":") && !IsOp("]")) {
            ASSIGN_OR_RETURN(stop, ParseExpression());
          }
          if (IsOp(":")) {
            Next();
            if (!IsOp("]")) {
              ASSIGN_OR_RETURN(step, ParseExpression());
            }
          }
          s->args.push_back(std::move(e));
          s->args.push_back(std::move(start));
          s->args.push_back(std::move(stop));
          s->args.push_back(std::move(step));
          e = std::move(s);
        } else {
          ExprPtr item = Make(Expr::Kind::kItem, line);
          item->args.push_back(std::move(e));
          item->args.push_back(std::move(start));
          e = std::move(item);
        }
        RETURN_IF_ERROR(ExpectOp("]"));
      } else if (IsOp("(")) {
        ExprPtr c = Make(Expr::Kind::kCall, Peek().line);
        c->args.push_back(std::move(e));
        RETURN_IF_ERROR(ParseArgs(c.get()));
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& tok = Peek();
    const int line = tok.line;
    ExprPtr e = Make(Expr::Kind::kLiteral, line);
    switch (tok.kind) {
      case TokenKind::kName: {
        const std::string& n = tok.text;
        if (n == "true" || n == "True") {
          e->literal = Value::Bool(true);
        } else if (n == "false" || n == "False") {
          e->literal = Value::Bool(false);
        } else if (n == "none" || n == "None") {
          e->literal = Value::MakeNone();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = n;
        }
        Next();
        return e;
      }
      case TokenKind::kString: {
        std::string s;
        while (Peek().kind == TokenKind::kString) s += Next().text;  // "a" "b" is "ab"
        e->literal = Value::Str(std::move(s));
        return e;
      }
      case TokenKind::kInt:
        e->literal = Value::Int(Next().int_value);
        return e;
      case TokenKind::kFloat:
        e->literal = Value::Float(Next().float_value);
        return e;
      default:
        break;
    }
    if (IsOp("(")) {
      Next();
      if (IsOp(")")) {  // () is the empty tuple
        Next();
        e->kind = Expr::Kind::kList;
        return e;
      }
      ASSIGN_OR_RETURN(ExprPtr inner, ParseExpression());
      if (IsOp(",")) {
        ExprPtr list = Make(Expr::Kind::kList, line);
        list->args.push_back(std::move(inner));
        while (IsOp(",")) {
          Next();
          if (IsOp(")")) break;
          ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
          list->args.push_back(std::move(item));
        }
        inner = std::move(list);
      }
      RETURN_IF_ERROR(ExpectOp(")"));
      return inner;
    }
    if (IsOp("[")) {
      Next();
      e->kind = Expr::Kind::kList;
      while (!IsOp("]")) {
        ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
        e->args.push_back(std::move(item));
        if (!IsOp(",")) break;
        Next();
      }
      RETURN_IF_ERROR(ExpectOp("]"));
      return e;
    }
    if (IsOp("{")) {
      Next();
      e->kind = Expr::Kind::kDict;
      while (!IsOp("}")) {
        ASSIGN_OR_RETURN(ExprPtr key, ParseExpression());
        RETURN_IF_ERROR(ExpectOp(":"));
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        e->args.push_back(std::move(key));
        e->args.push_back(std::move(value));
        if (!IsOp(",")) break;
        Next();
      }
      RETURN_IF_ERROR(ExpectOp("}"));
      return e;
    }
    return Error(absl::StrCat("expected an expression, got ", Describe(tok)));
  }

  std::vector<Token> t_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loops_ = 0;  // enclosing for loops (break and continue need one)
};

}  // namespace

absl::StatusOr<Body> ParseTemplate(std::string_view source) {
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Lex(source));
  return Parser(std::move(tokens)).Run();
}

}  // namespace gla::chat
