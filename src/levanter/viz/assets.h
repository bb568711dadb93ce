// The files of src/levanter/viz/assets/ (JavaScript, CSS, HTML), embedded in the program at build time
// (cmake/embed_assets.cmake), so that every page we serve or write is self-contained and works offline.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace levanter::viz {

// The contents of assets/<name>; throws std::out_of_range naming the file and the files there are.
std::string_view asset(std::string_view name);
std::vector<std::string> asset_names();

}  // namespace levanter::viz
