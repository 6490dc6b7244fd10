// Checkpoint files (internal to the trainer): a LibTorch archive followed by a
// trailer that carries its size and CRC-32, so that a damaged file is recognised
// before a single tensor of it is trusted. LibTorch's own reader checks neither:
// a flipped exponent bit resumes silently, a truncated file ends in a stack trace.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace moescale::checkpoint {

// A checkpoint that fails its check or cannot be read; the message is one line.
class Damaged : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Writes `archive` to a temporary file beside `path` (synced to disk), keeps the
// checkpoint that was at `path` as `previous`, then renames the new one into place.
// A write that fails removes its temporary file and throws std::system_error with the
// cause (std::errc::no_space_on_device on a full file system).
void write(torch::serialize::OutputArchive& archive, const std::filesystem::path& path,
           const std::filesystem::path& previous);

// Loads `path` into `archive` after checking its trailer and checksum; throws
// Damaged, saying what is wrong, for anything that is not an intact checkpoint.
void read(const std::filesystem::path& path, torch::serialize::InputArchive& archive,
          const torch::Device& device);

// Renames a damaged checkpoint to PATH.bad-N (the first free N) and returns the new
// name: never deleted, so that it can still be looked at.
std::filesystem::path set_aside(const std::filesystem::path& path);

// Removes the temporary files beside `path` that processes of this host, now gone,
// left behind (a crash or a kill mid-write).
void remove_abandoned_temp_files(const std::filesystem::path& path);

// The first line of a LibTorch message, without its C++ stack trace.
std::string first_line(const std::string& message);

}  // namespace moescale::checkpoint
