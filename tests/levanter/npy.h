// Minimal .npy reading and writing for exchanging tensors with Python reference scripts in tests.
#pragma once

#include <ATen/ATen.h>

#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>

namespace levanter::testing {

inline void write_npy(const std::string& path, const at::Tensor& t_in) {
  at::Tensor t = t_in.detach().contiguous().cpu();
  std::string descr;
  switch (t.scalar_type()) {
    case at::kFloat:
      descr = "<f4";
      break;
    case at::kDouble:
      descr = "<f8";
      break;
    case at::kLong:
      descr = "<i8";
      break;
    case at::kInt:
      descr = "<i4";
      break;
    case at::kBool:
      descr = "|b1";
      break;
    default:
      t = t.to(at::kFloat);
      descr = "<f4";
  }
  std::string shape = "(";
  for (int64_t d : t.sizes()) shape += std::to_string(d) + ",";
  shape += ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&len), 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline at::Tensor read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  char magic[8];
  in.read(magic, 8);
  uint16_t len = 0;
  in.read(reinterpret_cast<char*>(&len), 2);
  std::string header(len, ' ');
  in.read(header.data(), len);
  auto field = [&](const std::string& key) {
    size_t p = header.find("'" + key + "'");
    if (p == std::string::npos) throw std::runtime_error(path + ": no " + key);
    return header.substr(header.find(':', p) + 1);
  };
  std::string descr = field("descr");
  descr = descr.substr(descr.find('\'') + 1, 3);
  at::ScalarType st = descr == "<f4"   ? at::kFloat
                      : descr == "<f8" ? at::kDouble
                      : descr == "<i8" ? at::kLong
                      : descr == "<i4" ? at::kInt
                                       : at::kBool;
  std::string sh = field("shape");
  sh = sh.substr(sh.find('(') + 1, sh.find(')') - sh.find('(') - 1);
  std::vector<int64_t> shape;
  size_t pos = 0;
  while (pos < sh.size()) {
    size_t c = sh.find(',', pos);
    std::string tok = sh.substr(pos, c == std::string::npos ? std::string::npos : c - pos);
    if (tok.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(tok));
    if (c == std::string::npos) break;
    pos = c + 1;
  }
  at::Tensor t = at::empty(shape, st);
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  if (!in) throw std::runtime_error(path + ": truncated");
  return t;
}

}  // namespace levanter::testing
