// What every GPU benchmark prints and leaves behind (issue 19): a header naming the device, the
// date (UTC), the commit (GLA_COMMIT, set by deploy/gpu-check.sh from deploy/gpu-bundle.sh's
// record) and the ceilings measured in this run; and, when GLA_BENCH_OUT names a folder, a JSON
// file there (<bench>.json) with the same header and one object per table row, for scripts that
// compare runs. Header-only and free of Abseil: the kernel benchmarks are built with nvcc alone on
// the GPU machine.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "tests/cuda/device_ceilings.h"

namespace gla::bench {

class BenchReport {
 public:
  // One table row: ordered fields, numbers or text.
  class Row {
   public:
    Row& Num(std::string key, double v) {
      fields_.emplace_back(std::move(key), v);
      return *this;
    }
    Row& Str(std::string key, std::string v) {
      fields_.emplace_back(std::move(key), std::move(v));
      return *this;
    }

   private:
    friend class BenchReport;
    std::vector<std::pair<std::string, std::variant<double, std::string>>> fields_;
  };

  BenchReport(std::string bench, DeviceCeilings ceilings) : bench_(std::move(bench)), ceilings_(std::move(ceilings)) {
    const std::time_t now = std::time(nullptr);
    char date[32];
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
    date_ = date;
    const char* commit = std::getenv("GLA_COMMIT");
    commit_ = commit && *commit ? commit : "unknown (GLA_COMMIT not set)";
  }

  const DeviceCeilings& ceilings() const { return ceilings_; }

  // "# <bench> on <device>, <date>, commit <commit>" and the ceilings, as comment lines.
  void PrintHeader() const {
    std::printf("# %s on %s, %s, commit %s\n", bench_.c_str(), ceilings_.device.c_str(), date_.c_str(),
                commit_.c_str());
    std::printf("# ceilings measured in this run: device copy %.2f TB/s (read + write), bf16 GEMM %.0f TFLOP/s, "
                "TF32 GEMM %.0f TFLOP/s; every floor below is computed from them\n",
                ceilings_.copy_bytes_per_s / 1e12, ceilings_.bf16_gemm_flops / 1e12, ceilings_.tf32_gemm_flops / 1e12);
  }

  Row& AddRow() { return rows_.emplace_back(); }
  void SetNote(std::string key, std::string value) { notes_.emplace_back(std::move(key), std::move(value)); }

  // Writes $GLA_BENCH_OUT/<bench>.json (nothing when GLA_BENCH_OUT is unset). Returns false, having
  // said why on stderr, when the file cannot be written.
  bool WriteJsonIfAsked() const {
    const char* dir = std::getenv("GLA_BENCH_OUT");
    if (dir == nullptr || *dir == '\0') return true;
    const std::string path = std::string(dir) + "/" + bench_ + ".json";
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) {
      std::perror(("bench report: " + path).c_str());
      return false;
    }
    std::string s = "{\n  \"bench\": " + Quote(bench_) + ",\n  \"device\": " + Quote(ceilings_.device) +
                    ",\n  \"date\": " + Quote(date_) + ",\n  \"commit\": " + Quote(commit_) +
                    ",\n  \"ceilings\": {\"copy_bytes_per_s\": " + Number(ceilings_.copy_bytes_per_s) +
                    ", \"bf16_gemm_flops\": " + Number(ceilings_.bf16_gemm_flops) +
                    ", \"tf32_gemm_flops\": " + Number(ceilings_.tf32_gemm_flops) + "}";
    for (const auto& [k, v] : notes_) s += ",\n  " + Quote(k) + ": " + Quote(v);
    s += ",\n  \"rows\": [";
    for (size_t i = 0; i < rows_.size(); ++i) {
      s += i ? ",\n    {" : "\n    {";
      for (size_t j = 0; j < rows_[i].fields_.size(); ++j) {
        const auto& [key, value] = rows_[i].fields_[j];
        s += (j ? ", " : "") + Quote(key) + ": ";
        s += std::holds_alternative<double>(value) ? Number(std::get<double>(value)) : Quote(std::get<std::string>(value));
      }
      s += "}";
    }
    s += "\n  ]\n}\n";
    const bool ok = std::fwrite(s.data(), 1, s.size(), f) == s.size();
    if (std::fclose(f) != 0 || !ok) {
      std::fprintf(stderr, "bench report: writing %s failed\n", path.c_str());
      return false;
    }
    return true;
  }

 private:
  static std::string Quote(const std::string& v) {
    std::string out = "\"";
    for (char ch : v) {
      if (ch == '"' || ch == '\\') {
        out += '\\';
        out += ch;
      } else if (static_cast<unsigned char>(ch) < 0x20) {
        char esc[8];
        std::snprintf(esc, sizeof esc, "\\u%04x", ch);
        out += esc;
      } else {
        out += ch;
      }
    }
    return out + "\"";
  }
  // JSON has no NaN or infinity: those become null.
  static std::string Number(double v) {
    if (v != v || v > 1e308 || v < -1e308) return "null";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
  }

  std::string bench_, date_, commit_;
  DeviceCeilings ceilings_;
  std::vector<std::pair<std::string, std::string>> notes_;
  std::vector<Row> rows_;
};

}  // namespace gla::bench
