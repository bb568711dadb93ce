// Keeps docs/haliax.md and its tests in step. In the test source, each snippet sits between `// [doc:name]` and
// `// [/doc:name]`; dedented, it must be exactly the content of one ```cpp block of the markdown, and every
// ```cpp block of the markdown must be one of those snippets (so nothing in the tutorial is untested code).
// Outputs the tutorial quotes (haliax_md_quotes.h) must each be exactly one ```text block.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "docs/haliax_md_quotes.h"

namespace {

struct Snippet {
  std::string name;
  std::string code;  // dedented, each line ending in '\n'
};

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// Removes the indentation common to all non-blank lines.
std::string dedent(const std::vector<std::string>& lines) {
  size_t indent = std::string::npos;
  for (const std::string& l : lines) {
    size_t first = l.find_first_not_of(' ');
    if (first != std::string::npos) indent = std::min(indent, first);
  }
  std::string out;
  for (const std::string& l : lines) out += (l.size() > indent ? l.substr(indent) : std::string()) + "\n";
  return out;
}

// The marked snippets of a source file; malformed markers (unclosed, nested, mismatched, duplicate) are errors.
std::vector<Snippet> extract_snippets(const std::string& source) {
  static const std::regex open(R"(^\s*// \[doc:([A-Za-z0-9_]+)\]\s*$)");
  static const std::regex close(R"(^\s*// \[/doc:([A-Za-z0-9_]+)\]\s*$)");
  std::vector<Snippet> out;
  std::optional<std::string> current;
  std::vector<std::string> body;
  std::smatch m;
  for (const std::string& line : lines_of(source)) {
    if (std::regex_match(line, m, open)) {
      if (current) throw std::runtime_error("snippet " + m[1].str() + " opened inside snippet " + *current);
      for (const Snippet& s : out) {
        if (s.name == m[1].str()) throw std::runtime_error("snippet " + s.name + " defined twice");
      }
      current = m[1].str();
      body.clear();
    } else if (std::regex_match(line, m, close)) {
      if (!current || *current != m[1].str()) throw std::runtime_error("unexpected close of snippet " + m[1].str());
      out.push_back({*current, dedent(body)});
      current.reset();
    } else if (current) {
      body.push_back(line);
    }
  }
  if (current) throw std::runtime_error("snippet " + *current + " is never closed");
  return out;
}

// The contents of the fenced blocks of the given language (```lang ... ```), each line ending in '\n'.
std::vector<std::string> fenced_blocks(const std::string& markdown, const std::string& lang) {
  std::vector<std::string> out;
  std::optional<std::string> block;
  bool other = false;  // inside a fence of another language
  for (const std::string& line : lines_of(markdown)) {
    if (block) {
      if (line == "```") {
        out.push_back(*block);
        block.reset();
      } else {
        *block += line + "\n";
      }
    } else if (other) {
      if (line == "```") other = false;
    } else if (line == "```" + lang) {
      block = std::string();
    } else if (line.rfind("```", 0) == 0) {
      other = true;
    }
  }
  return out;
}

const std::string kMarkdown = std::string(LEVANTER_SOURCE_DIR) + "/docs/haliax.md";
const std::string kSource = std::string(LEVANTER_SOURCE_DIR) + "/tests/docs/test_haliax_md.cpp";

}  // namespace

TEST(DocsSync, ExtractorDedentsAndRejectsMalformedMarkers) {
  std::vector<Snippet> s = extract_snippets("x\n  // [doc:a]\n  int a = 1;\n\n    f(a);\n  // [/doc:a]\ny\n");
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].name, "a");
  EXPECT_EQ(s[0].code, "int a = 1;\n\n  f(a);\n");
  EXPECT_THROW(extract_snippets("// [doc:a]\nx\n"), std::runtime_error);
  EXPECT_THROW(extract_snippets("// [doc:a]\n// [doc:b]\n// [/doc:b]\n// [/doc:a]\n"), std::runtime_error);
  EXPECT_THROW(extract_snippets("// [doc:a]\n// [/doc:b]\n"), std::runtime_error);
  EXPECT_THROW(extract_snippets("// [doc:a]\n// [/doc:a]\n// [doc:a]\n// [/doc:a]\n"), std::runtime_error);
  std::vector<std::string> blocks =
      fenced_blocks("a\n```cpp\nint x;\n```\n```text\n```cpp\n```\n```cpp\ny;\n```\n", "cpp");
  EXPECT_EQ(blocks, (std::vector<std::string>{"int x;\n", "y;\n"}));
}

TEST(DocsSync, EverySnippetOfTheHaliaxTestsIsACppBlockOfTheTutorial) {
  std::vector<Snippet> snippets = extract_snippets(read_text(kSource));
  std::vector<std::string> blocks = fenced_blocks(read_text(kMarkdown), "cpp");
  EXPECT_GE(snippets.size(), 15u) << "the tutorial's tests lost their markers";
  for (const Snippet& s : snippets) {
    EXPECT_EQ(std::count(blocks.begin(), blocks.end(), s.code), 1)
        << "snippet [doc:" << s.name << "] must appear verbatim, once, as a ```cpp block of docs/haliax.md:\n"
        << s.code;
  }
}

TEST(DocsSync, EveryCppBlockOfTheTutorialIsATestedSnippet) {
  std::vector<Snippet> snippets = extract_snippets(read_text(kSource));
  std::vector<std::string> blocks = fenced_blocks(read_text(kMarkdown), "cpp");
  EXPECT_EQ(blocks.size(), snippets.size());
  for (const std::string& b : blocks) {
    bool found = std::any_of(snippets.begin(), snippets.end(), [&](const Snippet& s) { return s.code == b; });
    EXPECT_TRUE(found) << "this ```cpp block of docs/haliax.md is not a snippet of " << kSource << ":\n" << b;
  }
  // And in the same order as in the tests, so the tutorial reads top to bottom like its test file.
  std::vector<std::string> in_order;
  for (const Snippet& s : snippets) in_order.push_back(s.code);
  EXPECT_EQ(blocks, in_order);
}

TEST(DocsSync, QuotedOutputsAreTextBlocksOfTheTutorial) {
  std::vector<std::string> blocks = fenced_blocks(read_text(kMarkdown), "text");
  for (std::string quote : haliax_md::kAll) {
    if (quote.empty() || quote.back() != '\n') quote += "\n";
    EXPECT_EQ(std::count(blocks.begin(), blocks.end(), quote), 1)
        << "docs/haliax.md must quote this output as a ```text block:\n"
        << quote;
  }
}
