#include "levanter/viz/page.h"

#include "levanter/viz/assets.h"

namespace levanter::viz {

std::string json_for_script(const nlohmann::json& json) {
  const std::string text = json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string out;
  out.reserve(text.size() + 64);
  for (char c : text) {
    if (c == '<') {
      out += "\\u003c";  // '<' only occurs inside JSON strings, where the escape means the same character
    } else {
      out += c;
    }
  }
  return out;
}

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string token_view_page(const nlohmann::json& page_data) {
  std::string title = page_data.value("title", std::string());
  if (title.empty()) title = "Token probabilities";
  std::string html;
  html += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  html += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  html += "<title>" + html_escape(title) + "</title>\n<style>\n";
  html += asset("common.css");
  html += "\n";
  html += asset("token_view.css");
  html += "</style>\n</head>\n<body>\n<div id=\"token-view\"></div>\n";
  html += "<script type=\"application/json\" id=\"token-view-data\">";
  html += json_for_script(page_data);
  html += "</script>\n<script>\n";
  html += asset("token_view.js");
  html += "\n</script>\n<script>\n";
  html +=
      "LevanterTokenView.render(document.getElementById(\"token-view\"), "
      "JSON.parse(document.getElementById(\"token-view-data\").textContent));\n";
  html += "</script>\n</body>\n</html>\n";
  return html;
}

}  // namespace levanter::viz
