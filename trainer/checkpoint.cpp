// Checkpoint files: write with a checksum, verify before loading, set aside what fails.
#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <system_error>

namespace moescale::checkpoint {
namespace fs = std::filesystem;

namespace {

// Appended after the archive: a reader that finds no such trailer at the end of the
// file, or another size or checksum in it, was given a truncated or damaged file.
struct Trailer {
  char magic[8];
  uint64_t archive_bytes;
  uint64_t crc32;
};
static_assert(sizeof(Trailer) == 24);
constexpr char kMagic[8] = {'M', 'O', 'E', 'C', 'K', 'P', 'T', '1'};

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// errno of the first failed write, 0 when all of `bytes` was written.
int write_all(int fd, const char* bytes, size_t n) {
  while (n > 0) {
    const ssize_t wrote = ::write(fd, bytes, n);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote < 0) return errno;
    if (wrote == 0) return ENOSPC;
    bytes += wrote;
    n -= static_cast<size_t>(wrote);
  }
  return 0;
}

[[noreturn]] void fail(int error, const std::string& what) {
  throw std::system_error(error, std::generic_category(), what);
}

// Writes the archive and its trailer to `tmp`; returns errno of the first failure, 0 if none.
int write_file(torch::serialize::OutputArchive& archive, const fs::path& tmp) {
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  int error = 0;
  uint64_t bytes = 0;
  uLong crc = crc32_z(0, nullptr, 0);
  try {
    // LibTorch's zip writer turns a short write into an exception that can escape
    // from its destructor (std::terminate: a full disk killed training with
    // SIGABRT). It is always told that everything was written, and the first
    // failure is reported after it is done.
    archive.save_to([&](const void* data, size_t n) -> size_t {
      if (error != 0) return n;
      const auto* p = static_cast<const char*>(data);
      error = write_all(fd, p, n);
      crc = crc32_z(crc, reinterpret_cast<const Bytef*>(p), n);
      bytes += n;
      return n;
    });
  } catch (const std::exception&) {
    if (error == 0) error = EIO;
  }
  Trailer trailer{};
  std::memcpy(trailer.magic, kMagic, sizeof kMagic);
  trailer.archive_bytes = bytes;
  trailer.crc32 = crc;
  if (error == 0) error = write_all(fd, reinterpret_cast<const char*>(&trailer), sizeof trailer);
  if (error == 0 && ::fsync(fd) != 0) error = errno;
  if (::close(fd) != 0 && error == 0) error = errno;
  return error;
}

// A read-only mapping of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const fs::path& path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw Damaged(fmt::format("cannot be opened ({})", std::strerror(errno)));
    struct stat st {};
    if (::fstat(fd_, &st) != 0)
      throw Damaged(fmt::format("cannot be read ({})", std::strerror(errno)));
    if (S_ISDIR(st.st_mode)) throw Damaged("is a directory, not a file");
    if (!S_ISREG(st.st_mode)) throw Damaged("is not a regular file");
    size_ = static_cast<size_t>(st.st_size);
    if (size_ == 0) return;
    map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (map_ == MAP_FAILED) {
      map_ = nullptr;
      throw Damaged(fmt::format("cannot be read ({})", std::strerror(errno)));
    }
  }
  ~MappedFile() {
    if (map_) ::munmap(map_, size_);
    if (fd_ >= 0) ::close(fd_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const char* data() const { return static_cast<const char*>(map_); }
  size_t size() const { return size_; }

 private:
  int fd_ = -1;
  void* map_ = nullptr;
  size_t size_ = 0;
};

bool process_gone(const std::string& pid_text) {
  char* end = nullptr;
  const long pid = std::strtol(pid_text.c_str(), &end, 10);
  if (pid_text.empty() || *end != '\0' || pid <= 0) return false;
  if (pid == ::getpid()) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

std::string first_line(const std::string& message) {
  std::string line = message.substr(0, message.find('\n'));
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
  return line;
}

void write(torch::serialize::OutputArchive& archive, const fs::path& path,
           const fs::path& previous) {
  // A name no other process, host or save can share: two writers never rename each
  // other's half-written file, and a dead writer's file can be recognised.
  static std::atomic<int64_t> saves{0};
  const fs::path tmp =
      fmt::format("{}.tmp.{}.{}.{}", path.string(), host_name(), ::getpid(), saves++);
  const int error = write_file(archive, tmp);
  if (error != 0) {
    ::unlink(tmp.c_str());
    fail(error, fmt::format("cannot write checkpoint {}", tmp.string()));
  }
  std::error_code ec;
  const bool had_one = fs::is_regular_file(path, ec);
  ec.clear();
  if (had_one) fs::rename(path, previous, ec);
  if (!ec) fs::rename(tmp, path, ec);
  if (ec) {
    ::unlink(tmp.c_str());
    fail(ec.value(), fmt::format("cannot put checkpoint {} in place", path.string()));
  }
}

void read(const fs::path& path, torch::serialize::InputArchive& archive,
          const torch::Device& device) {
  const MappedFile file(path);
  if (file.size() < sizeof(Trailer))
    throw Damaged(
        fmt::format("is {} bytes long, too short for a checkpoint (truncated?)", file.size()));
  Trailer trailer{};
  std::memcpy(&trailer, file.data() + file.size() - sizeof trailer, sizeof trailer);
  const size_t archive_bytes = file.size() - sizeof trailer;
  if (std::memcmp(trailer.magic, kMagic, sizeof kMagic) != 0)
    throw Damaged(fmt::format(
        "has no checksum trailer (truncated, overwritten, or written before moescale checked "
        "checkpoints; {} bytes)",
        file.size()));
  if (trailer.archive_bytes != archive_bytes)
    throw Damaged(fmt::format("holds {} bytes where its trailer says {} (truncated?)",
                              archive_bytes, trailer.archive_bytes));
  const uLong crc =
      crc32_z(crc32_z(0, nullptr, 0), reinterpret_cast<const Bytef*>(file.data()), archive_bytes);
  if (crc != trailer.crc32)
    throw Damaged(
        fmt::format("fails its checksum (CRC-32 {:08x}, written as {:08x}): its bytes "
                    "changed after it was written",
                    crc, trailer.crc32));
  try {
    archive.load_from(file.data(), archive_bytes, device);
  } catch (const c10::Error& e) {
    throw Damaged(
        fmt::format("cannot be read by LibTorch: {}", first_line(e.what_without_backtrace())));
  }
}

fs::path set_aside(const fs::path& path) {
  for (int n = 1;; ++n) {
    const fs::path aside = fmt::format("{}.bad-{}", path.string(), n);
    std::error_code ec;
    if (fs::exists(fs::symlink_status(aside, ec))) continue;
    fs::rename(path, aside);  // throws, with both names, if it cannot be renamed
    return aside;
  }
}

void remove_abandoned_temp_files(const fs::path& path) {
  // Names: PATH.tmp.HOST.PID.N (and PATH.tmp.PID.N from before the host was named).
  const std::string prefix = path.filename().string() + ".tmp.";
  const std::string here = host_name();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(path.parent_path(), ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(prefix)) continue;
    std::string rest = name.substr(prefix.size());
    const size_t last = rest.rfind('.');
    if (last == std::string::npos) continue;
    rest.resize(last);  // HOST.PID or PID
    const size_t dot = rest.rfind('.');
    const std::string host = dot == std::string::npos ? here : rest.substr(0, dot);
    const std::string pid = dot == std::string::npos ? rest : rest.substr(dot + 1);
    if (host == here && process_gone(pid)) fs::remove(entry.path(), ec);
  }
}

}  // namespace moescale::checkpoint
