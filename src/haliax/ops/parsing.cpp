#include "haliax/ops/parsing.h"

#include <cctype>

#include "haliax/error.h"

namespace haliax::detail {

void raise_parse_error(const std::string& message, const std::string& expression,
                       std::optional<std::pair<size_t, size_t>> range) {
  std::string out = "Error while parsing:\n    " + expression;
  if (range) {
    size_t width = range->second > range->first ? range->second - range->first : 1;
    out += "\n    " + std::string(range->first, ' ') + std::string(width, '^');
  }
  value_error(out + "\n" + message);
}

namespace {

using Range = std::pair<size_t, size_t>;

bool is_ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

std::string parse_quoted(const std::string& e, size_t& pos) {
  char quote = e[pos++];
  std::string ident;
  while (pos < e.size()) {
    if (e[pos] == quote) {
      ++pos;
      break;
    }
    if (e[pos] == '\\') {
      ++pos;
      if (pos >= e.size())
        raise_parse_error("Unexpected end of string at position " + std::to_string(pos), e, Range{pos, pos + 1});
    }
    ident += e[pos++];
  }
  if (ident.empty()) raise_parse_error("Empty strings are not valid identifiers", e, Range{pos, pos + 1});
  return ident;
}

std::string parse_ident(const std::string& e, size_t& pos) {
  if (e[pos] == '\'' || e[pos] == '"') return parse_quoted(e, pos);
  std::string ident;
  while (pos < e.size() && is_ident_char(e[pos])) {
    if (ident.empty() && std::isdigit(static_cast<unsigned char>(e[pos]))) {
      raise_parse_error("Identifiers cannot start with a number", e, Range{pos, pos + 1});
    }
    ident += e[pos++];
  }
  if (ident.empty()) raise_parse_error("Identifier expected", e, Range{pos, pos + 1});
  return ident;
}

Capture parse_group(const std::string& e, size_t& pos) {
  size_t start = pos;
  ++pos;  // '('
  Capture c;
  std::string current;
  bool closed = false;
  while (pos < e.size()) {
    char ch = e[pos];
    if (ch == ')') {
      ++pos;
      closed = true;
      break;
    } else if (ch == ':') {
      if (c.binding) raise_parse_error("Only one binding allowed per group", e, Range{pos, pos + 1});
      if (current.empty()) raise_parse_error("Binding cannot be empty", e, Range{pos, pos + 1});
      if (!c.axes.empty()) raise_parse_error("Binding must come before axes", e, Range{pos, pos + 1});
      c.binding = current;
      current.clear();
      ++pos;
    } else if (std::isspace(static_cast<unsigned char>(ch))) {
      if (!current.empty()) c.axes.push_back(current);
      current.clear();
      ++pos;
    } else if (ch == '(') {
      raise_parse_error("Only one level of nesting is allowed", e, Range{pos, pos + 1});
    } else if (ch == '}') {
      value_error("Unexpected } at " + std::to_string(pos));  // Haliax's text here: no caret
    } else if (is_ident_char(ch)) {
      if (current.empty() && std::isdigit(static_cast<unsigned char>(ch))) {
        raise_parse_error("Identifiers cannot start with a number", e, Range{pos, pos + 1});
      }
      current += ch;
      ++pos;
    } else if (ch == '\'' || ch == '"') {
      if (!current.empty()) c.axes.push_back(current);
      current = parse_quoted(e, pos);
    } else {
      raise_parse_error(std::string("Unexpected character ") + ch, e, Range{pos, pos + 1});
    }
  }
  if (!closed) raise_parse_error("Expected )", e, Range{start, pos});
  if (!current.empty()) c.axes.push_back(current);
  if (c.axes.empty()) raise_parse_error("No axes found", e, Range{start, pos});
  c.range = {start, pos};
  return c;
}

Expression parse_expression(const std::string& e, size_t& pos) {
  Expression out;
  bool seen_char = false, finished = false;
  while (pos < e.size()) {
    char ch = e[pos];
    if (ch == '{') {
      if (seen_char) raise_parse_error("Unexpected {", e, Range{pos, pos + 1});
      seen_char = true;
      out.ordered = false;
      ++pos;
    } else if (ch == '}') {
      if (out.ordered) raise_parse_error("Unexpected }", e, Range{pos, pos + 1});
      ++pos;
      finished = true;
    } else if (ch == '(') {
      if (finished) raise_parse_error("Unexpected ( after }", e, Range{pos, pos + 1});
      seen_char = true;
      out.captures.push_back(parse_group(e, pos));
    } else if (std::isspace(static_cast<unsigned char>(ch))) {
      ++pos;
    } else if (e.compare(pos, 3, "...") == 0) {
      if (finished) raise_parse_error("Unexpected ... after }", e, Range{pos, pos + 3});
      seen_char = true;
      Capture c;
      c.ellipsis = true;
      c.range = {pos, pos + 3};
      out.captures.push_back(c);
      pos += 3;
    } else if (ch == '-') {
      if (pos + 1 >= e.size()) raise_parse_error("Unexpected end of string", e, Range{pos, pos + 1});
      if (e[pos + 1] != '>') raise_parse_error("Expected >", e, Range{pos, pos + 1});
      break;
    } else if (ch == ',') {
      if (!out.ordered && !finished) {
        ++pos;  // inside braces a comma is whitespace
        continue;
      }
      break;
    } else {
      if (finished) raise_parse_error("Unexpected character after }", e, Range{pos, pos + 1});
      size_t start = pos;
      std::string ident = parse_ident(e, pos);
      Capture c;
      c.binding = ident;
      c.axes = {ident};
      c.range = {start, pos};
      out.captures.push_back(c);
      seen_char = true;
    }
  }
  if (!finished && !out.ordered) raise_parse_error("Expected }", e, Range{pos, pos + 1});
  return out;
}

}  // namespace

std::pair<Expression, Expression> parse_rearrangement(const std::string& e) {
  size_t pos = 0;
  Expression lhs = parse_expression(e, pos);
  if (pos + 2 > e.size()) raise_parse_error("Unexpected end of string", e, Range{pos, pos + 1});
  if (e.compare(pos, 2, "->") != 0) raise_parse_error("Expected ->", e, Range{pos, pos + 1});
  pos += 2;
  Expression rhs = parse_expression(e, pos);
  if (pos != e.size()) raise_parse_error("Unexpected character", e, Range{pos, pos + 1});
  return {lhs, rhs};
}

std::pair<std::vector<Expression>, Expression> parse_einsum(const std::string& e) {
  size_t pos = 0;
  std::vector<Expression> lhses;
  while (pos < e.size()) {
    lhses.push_back(parse_expression(e, pos));
    if (pos >= e.size()) break;
    if (e[pos] == ',') {
      ++pos;
      continue;
    }
    if (e[pos] == '-') {
      if (pos + 1 >= e.size() || e[pos + 1] != '>') raise_parse_error("Expected >", e, Range{pos, pos + 1});
      pos += 2;
      break;
    }
    raise_parse_error("Expected , or ->", e, Range{pos, pos + 1});
  }
  Expression rhs = parse_expression(e, pos);
  if (pos != e.size()) raise_parse_error("Unexpected character", e, Range{pos, pos + 1});
  return {lhses, rhs};
}

std::optional<AliasTable::Entry> AliasTable::get(const std::string& alias) const {
  auto it = table_.find(alias);
  if (it == table_.end()) return std::nullopt;
  return it->second;
}

void AliasTable::bind(const std::string& alias, const Axis& axis, const std::string& expr,
                      std::pair<size_t, size_t> range) {
  auto it = table_.find(alias);
  if (it == table_.end()) {
    table_[alias] = Entry{axis, axis.name};
    return;
  }
  const Entry& cur = it->second;
  if (cur.axis) {
    if (*cur.axis != axis) raise_parse_error("Alias " + alias + " is assigned to more than one axis", expr, range);
  } else if (cur.name != axis.name) {
    raise_parse_error("Alias " + alias + " is assigned to more than one axis", expr, range);
  } else {
    table_[alias] = Entry{axis, axis.name};
  }
}

}  // namespace haliax::detail
