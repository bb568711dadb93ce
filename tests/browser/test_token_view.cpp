// The token-probability view (src/levanter/viz/page.h, assets/token_view.js) as a person sees it: a page written from
// known data, opened from a file URL in headless Chromium. One span.tok per token; each cell's computed background is
// viridis of its probability with matplotlib's values; a newline shows ↵ and breaks the line; a partial UTF-8 token
// is styled apart; the tooltip; the step slider; comparison mode. Saves build/browser_screenshots/token_view.png.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "browser.h"
#include "levanter/viz/page.h"
#include "levanter/viz/token_probs.h"

using nlohmann::json;

namespace {

json doc_scores(std::vector<double> p, double loss) {
  json top = json::array(), rank = json::array();
  for (size_t j = 0; j < p.size(); ++j) {
    top.push_back(json::array({json::array({" the", 0.5}), json::array({"</script><b>x", 0.125})}));
    rank.push_back(static_cast<int>(j) + 2);
  }
  return {{"loss", loss}, {"p", p}, {"rank", rank}, {"top", top}};
}

json known_data() {
  json docs_record = {{"kind", "docs"},
                      {"format", 1},
                      {"source", "validation"},
                      {"top_k", 2},
                      {"docs", json::array({json{{"index", 7},
                                                 {"tokens", {1, 2, 3, 4, 5, 6}},
                                                 {"pieces", {"Hello", " world", "\n", "\\xF0\\x9F", "🙂", " end"}},
                                                 {"partial", {3}}}})}};
  std::vector<levanter::viz::Series> series;
  series.push_back({"step 100", 100, json::array({doc_scores({0, 0.25, 0.5, 0.75, 1}, 1.234)})});
  series.push_back({"step 200", 200, json::array({doc_scores({1, 0.75, 0.5, 0.25, 0}, 0.5)})});
  return levanter::viz::page_data(docs_record, series, "known </script> data");
}

// The browser's "rgb(r, g, b)" of a token's background, as [r, g, b].
const char* kColours =
    "return Array.from(document.querySelectorAll('span.tok')).map(t => "
    "getComputedStyle(t).backgroundColor.match(/\\d+/g).slice(0, 3).map(Number));";

void expect_rgb(const json& got, const char* hex, const std::string& what) {
  const int want[3] = {std::stoi(std::string(hex + 1, 2), nullptr, 16), std::stoi(std::string(hex + 3, 2), nullptr, 16),
                       std::stoi(std::string(hex + 5, 2), nullptr, 16)};
  ASSERT_TRUE(got.is_array() && got.size() == 3) << what << ": " << got;
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(got[k].get<int>(), want[k], 1) << what << " channel " << k << ": " << got;
}

}  // namespace

TEST(TokenView, ColoursTooltipSliderAndComparisonInChromium) {
  if (auto why = browser::missing()) GTEST_SKIP() << *why;
  const std::string path =
      (std::filesystem::temp_directory_path() / ("levanter_token_view_" + std::to_string(::getpid()) + ".html"))
          .string();
  const json data = known_data();
  { std::ofstream(path) << levanter::viz::token_view_page(data); }
  // The data may hold "</script>": escaped, it cannot end the script element early.
  json cmp = data;
  cmp["series"][0]["label"] = "A";
  cmp["series"][1]["label"] = "B";
  cmp["series"][0]["docs"][0]["p"] = {0.25, 0.001, 0.5, 0.75, 1};
  cmp["series"][1]["docs"][0]["p"] = {0.25, 0.5, 0.005, 0.75, 1};
  cmp["compare"] = {{"a", 0}, {"b", 1}};

  const json r = browser::run(
      "file://" + path,
      {{{"wait", "document.querySelector('span.tok')"}},
       {{"eval", "return document.querySelectorAll('span.tok').length"}, {"as", "n"}},
       {{"eval",
         "return Array.from(document.querySelectorAll('span.tok')).map(t => [t.dataset.doc, t.dataset.pos, "
         "t.dataset.p, t.textContent, t.className])"},
        {"as", "toks"}},
       {{"eval", kColours}, {"as", "colours"}},
       {{"eval",
         "const t = document.querySelectorAll('span.tok'); return [t[3].getBoundingClientRect().top > "
         "t[2].getBoundingClientRect().top, getComputedStyle(t[2]).whiteSpace, getComputedStyle(t[3]).fontStyle, "
         "getComputedStyle(t[1]).color, getComputedStyle(t[5]).color]"},
        {"as", "layout"}},
       {{"eval", "return [LevanterTokenView.viridis(0), LevanterTokenView.viridis(0.5), LevanterTokenView.viridis(1)]"},
        {"as", "api"}},
       {{"eval", "return document.querySelector('.doc-loss').textContent"}, {"as", "loss"}},
       {{"eval", "return document.title"}, {"as", "title"}},
       {{"eval",
         "document.querySelectorAll('span.tok')[3].dispatchEvent(new MouseEvent('mouseover', {bubbles: true})); "
         "const tip = document.querySelector('.ltv-tooltip'); return [tip.hidden, tip.textContent]"},
        {"as", "tooltip"}},
       {{"screenshot", browser::screenshot_path("token_view.png")}},
       {{"eval",
         "const s = document.querySelector('input.step-slider'); s.value = '0'; "
         "s.dispatchEvent(new Event('input', {bubbles: true})); "
         "return [document.querySelector('.step-label').textContent, document.querySelector('.doc-loss').textContent]"},
        {"as", "slid"}},
       {{"eval", kColours}, {"as", "colours2"}},
       // Keyboard: focusing a token shows its tooltip too.
       {{"eval",
         "document.querySelectorAll('span.tok')[1].focus(); return document.querySelector('.ltv-tooltip').textContent"},
        {"as", "focus_tip"}},
       // Play: from the first step through to the last, then stops.
       {{"eval",
         "document.querySelector('button.play').click(); return document.querySelector('.step-label').textContent"},
        {"as", "playing"}},
       {{"wait",
         "document.querySelector('.step-label').textContent === 'step 200' && "
         "document.querySelector('button.play').textContent === '▶'"},
        {"timeout", 10}},
       {{"eval",
         "document.querySelector('input.step-slider').value = '0'; document.querySelector('input.step-slider')"
         ".dispatchEvent(new Event('input', {bubbles: true})); return 1"},
        {"as", "reset"}},
       {{"eval", "window.cmpView = LevanterTokenView.render(document.getElementById('token-view'), " + cmp.dump() +
                     "); return [document.querySelector('input.step-slider').hidden, "
                     "document.querySelector('.doc-loss').textContent, "
                     "Array.from(document.querySelectorAll('span.tok')).map(t => t.dataset.diff || '')]"},
        {"as", "cmp"}},
       {{"eval", kColours}, {"as", "diff_colours"}},
       {{"eval",
         "document.querySelectorAll('span.tok')[2].dispatchEvent(new MouseEvent('mouseover', {bubbles: true})); "
         "return document.querySelector('.ltv-tooltip').textContent"},
        {"as", "cmp_tooltip"}},
       {{"screenshot", browser::screenshot_path("token_view_compare.png")}},
       {{"eval", "document.querySelector('button.mode-a').click(); return 1"}, {"as", "a"}},
       {{"eval", kColours}, {"as", "a_colours"}},
       {{"eval", "document.querySelector('button.mode-b').click(); return 1"}, {"as", "b"}},
       {{"eval", kColours}, {"as", "b_colours"}},
       {{"eval",
         "window.cmpView.update(" + data.dump() + "); return document.querySelector('input.step-slider').hidden"},
        {"as", "back"}},
       {{"eval", kColours}, {"as", "colours3"}}});
  std::filesystem::remove(path);
  ASSERT_FALSE(r.is_null());

  EXPECT_EQ(r["n"], 6);
  const json& toks = r["toks"];
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(toks[i][0], "0");
    EXPECT_EQ(toks[i][1], std::to_string(i));
  }
  EXPECT_EQ(toks[0][2], "") << "position 0 has no prediction";
  // The page opens at the newest step (200).
  EXPECT_EQ(toks[1][2], "1");
  EXPECT_EQ(toks[3][2], "0.5");
  EXPECT_EQ(toks[5][2], "0");
  EXPECT_EQ(toks[2][3], "↵\n") << "a newline shows ↵ and breaks the line";
  EXPECT_NE(toks[3][4].get<std::string>().find("partial"), std::string::npos);
  EXPECT_EQ(toks[4][3], "🙂");

  // matplotlib's viridis at 0, 0.25, 0.5, 0.75, 1.
  const char* viridis[] = {"#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"};
  for (int j = 1; j < 6; ++j) expect_rgb(r["colours"][j], viridis[5 - j], "step 200, position " + std::to_string(j));
  EXPECT_EQ(r["api"], json({"rgb(68,1,84)", "rgb(33,145,140)", "rgb(253,231,37)"}));
  // Readable text: white on dark purple, black on yellow.
  EXPECT_EQ(r["layout"][0], true);
  EXPECT_EQ(r["layout"][1], "pre-wrap");
  EXPECT_EQ(r["layout"][2], "italic");
  EXPECT_EQ(r["layout"][3], "rgb(0, 0, 0)");
  EXPECT_EQ(r["layout"][4], "rgb(255, 255, 255)");
  EXPECT_EQ(r["loss"], "loss 0.500 nats");
  EXPECT_EQ(r["title"], "known </script> data");

  EXPECT_EQ(r["tooltip"][0], false);
  const std::string tip = r["tooltip"][1];
  EXPECT_NE(tip.find("\\xF0\\x9F"), std::string::npos) << tip;
  EXPECT_NE(tip.find("p = 0.5000, rank 4"), std::string::npos) << tip;
  EXPECT_NE(tip.find("\u201c the\u201d0.5000"), std::string::npos) << tip;
  EXPECT_NE(tip.find("</script><b>x"), std::string::npos) << "alternatives are text, never markup: " << tip;
  EXPECT_NE(tip.find("part of a character"), std::string::npos) << tip;

  // The slider shows the other step's colours.
  EXPECT_EQ(r["slid"][0], "step 100");
  EXPECT_EQ(r["slid"][1], "loss 1.234 nats");
  for (int j = 1; j < 6; ++j) expect_rgb(r["colours2"][j], viridis[j - 1], "step 100, position " + std::to_string(j));

  EXPECT_NE(r["focus_tip"].get<std::string>().find("p = 0, rank 2"), std::string::npos) << r["focus_tip"];
  EXPECT_EQ(r["playing"], "step 100");

  // Comparison: log p_B - log p_A on the diverging scale (white: equal; blue: B gives more, saturating at 100x;
  // red: less), both in the tooltip, A and B alone on request.
  EXPECT_EQ(r["cmp"][0], true) << "no slider when comparing";
  EXPECT_EQ(r["cmp"][1], "loss A 1.234 · B 0.500");
  EXPECT_EQ(r["cmp"][2][1], "0");
  expect_rgb(r["diff_colours"][1], "#f7f7f7", "equal");
  expect_rgb(r["diff_colours"][2], "#2166ac", "B 500x more probable");
  expect_rgb(r["diff_colours"][3], "#b2182b", "B 100x less probable");
  const std::string ctip = r["cmp_tooltip"];
  EXPECT_NE(ctip.find("A (A): p = 0.0010, rank 3"), std::string::npos) << ctip;
  EXPECT_NE(ctip.find("B (B): p = 0.5000, rank 3"), std::string::npos) << ctip;
  EXPECT_NE(ctip.find("log p_B − log p_A = 6.215"), std::string::npos) << ctip;
  expect_rgb(r["a_colours"][2], "#440154", "A alone, p 0.001");
  expect_rgb(r["a_colours"][3], "#21918c", "A alone, p 0.5");
  expect_rgb(r["b_colours"][2], "#21918c", "B alone, p 0.5");
  // update() back to the steps: the slider returns, at the newest step.
  EXPECT_EQ(r["back"], false);
  for (int j = 1; j < 6; ++j)
    expect_rgb(r["colours3"][j], viridis[5 - j], "after update, position " + std::to_string(j));
}

TEST(TokenView, PageEmbedsTheDataSafely) {
  const std::string html = levanter::viz::token_view_page(known_data());
  const size_t start = html.find("id=\"token-view-data\">");
  ASSERT_NE(start, std::string::npos);
  const size_t end = html.find("</script>", start);
  const std::string embedded = html.substr(start + 21, end - start - 21);
  EXPECT_EQ(embedded.find('<'), std::string::npos);
  EXPECT_EQ(json::parse(embedded), known_data());
  EXPECT_NE(html.find("<title>known &lt;/script&gt; data</title>"), std::string::npos);
  EXPECT_EQ(html.find("<script src"), std::string::npos) << "self-contained";
  EXPECT_EQ(html.find("<link"), std::string::npos) << "self-contained";
}
