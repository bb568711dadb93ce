// The token-probability view as one self-contained HTML file (`levanter viz --output page.html`): the CSS and
// JavaScript of assets/ inlined, the page data (token_probs.h: page_data) embedded as JSON. It opens offline from a
// file URL and loads nothing.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace levanter::viz {

std::string token_view_page(const nlohmann::json& page_data);

// `json` serialised so that it can sit inside a <script> element: every '<' written as \u003c, so no "</script>"
// or "<!--" can appear. JSON.parse reads it back unchanged.
std::string json_for_script(const nlohmann::json& json);

// Text for HTML element content and attribute values (&, <, >, ", ').
std::string html_escape(const std::string& text);

}  // namespace levanter::viz
