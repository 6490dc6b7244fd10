// A fresh folder under the system temp directory, removed with the object.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

#include <fmt/format.h>

namespace moescale::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "moescale-test") {
    path_ = std::filesystem::temp_directory_path() /
            fmt::format("{}-{}-{}", prefix, ::getpid(), counter_++);
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str(const std::string& name = "") const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
  static inline int counter_ = 0;
};

}  // namespace moescale::testing
