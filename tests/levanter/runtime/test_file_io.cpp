// runtime/file_io.h: atomic writes leave the old file or the whole new one, errors name the path, exclusive
// creation never clobbers, file locks exclude each other, reads check sizes and checksums.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "levanter/runtime/file_io.h"
#include "levanter/temp_dir.h"

using namespace levanter::runtime;
using levanter::testing::TempDir;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

class ErrorOfThisLayer : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace

TEST(FileIo, AtomicWriteReplacesWholeFileAndLeavesNoTemporary) {
  TempDir t;
  write_file_atomic(t / "f.json", "one");
  write_file_atomic(t / "f.json", "two, longer");
  EXPECT_EQ(read_small_file(t / "f.json"), "two, longer");
  EXPECT_EQ(entries(t.str()), std::vector<std::string>{"f.json"});
}

TEST(FileIo, UncommittedAtomicFileLeavesTheOldFile) {
  TempDir t;
  write_file_atomic(t / "f", "old");
  {
    AtomicFile f(t / "f");
    EXPECT_TRUE(is_temporary_name(fs::path(f.temporary_path()).filename().string()));
    EXPECT_EQ(f.temporary_path(), t / ("f.tmp-" + std::to_string(::getpid())));
    f.write("new bytes", 9);
    EXPECT_EQ(read_small_file(t / "f"), "old");  // readers see the old file while the new one is written
    // Destroyed without commit (an error on the way):
  }
  EXPECT_EQ(read_small_file(t / "f"), "old");
  EXPECT_EQ(entries(t.str()), std::vector<std::string>{"f"});
}

TEST(FileIo, AWriterKilledMidWriteLeavesOldFileAndARecognisableTemporary) {
  TempDir t;
  write_file_atomic(t / "f", "old");
  pid_t child = ::fork();
  if (child == 0) {
    AtomicFile f(t / "f");
    f.write("half of the new", 15);
    ::kill(::getpid(), SIGKILL);  // what a preemption does: no destructor runs
    std::_Exit(1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(read_small_file(t / "f"), "old");
  std::vector<std::string> names = entries(t.str());
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[1], "f.tmp-" + std::to_string(child));
  EXPECT_TRUE(is_temporary_name(names[1]));
  EXPECT_FALSE(is_temporary_name("f"));
  EXPECT_FALSE(is_temporary_name("manifest.json"));
}

TEST(FileIo, ConcurrentAtomicWritesOfOnePathEachLeaveAWholeFile) {
  TempDir t;
  std::vector<std::string> contents;
  for (int i = 0; i < 8; ++i) contents.push_back(std::string(100000 + i, static_cast<char>('a' + i)));
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 5; ++k) write_file_atomic(t / "f", contents[i]);
    });
  }
  for (auto& th : threads) th.join();
  const std::string final_text = read_small_file(t / "f");
  EXPECT_NE(std::find(contents.begin(), contents.end(), final_text), contents.end());
  EXPECT_EQ(entries(t.str()), std::vector<std::string>{"f"});
}

TEST(FileIo, ErrorsNameThePath) {
  TempDir t;
  std::ofstream(t / "exists") << "x";
  // Exclusive creation never clobbers a file.
  EXPECT_THAT([&] { ExclusiveFile f(t / "exists"); },
              ::testing::ThrowsMessage<IoError>(HasSubstr(t / "exists: cannot create: File exists")));
  EXPECT_EQ(read_small_file(t / "exists"), "x");
  EXPECT_THAT([&] { read_small_file(t / "missing"); },
              ::testing::ThrowsMessage<IoError>(HasSubstr(t / "missing: cannot open: No such file or directory")));
  EXPECT_THAT([&] { write_file_atomic(t / "no/such/dir/f", "x"); },
              ::testing::ThrowsMessage<IoError>(HasSubstr(t / "no/such/dir/f.tmp-")));
  EXPECT_THAT([&] { rename_path(t / "missing", t / "other"); },
              ::testing::ThrowsMessage<IoError>(HasSubstr(t / "other: cannot rename " + t / "missing")));
  EXPECT_THAT([&] { fsync_path(t / "missing"); }, ::testing::ThrowsMessage<IoError>(HasSubstr(t / "missing")));
  EXPECT_THAT([&] { read_file(t / "exists", /*expected_size=*/2); },
              ::testing::ThrowsMessage<IoError>(HasSubstr(t / "exists: size is 1 bytes, the manifest says 2")));
  File f = File::open(t / "exists", O_RDONLY);
  char buf[4];
  EXPECT_THAT([&] { f.read_exact_at(buf, 4, 0); }, ::testing::ThrowsMessage<IoError>(HasSubstr(t / "exists: read")));
  EXPECT_THAT([&] { read_small_file(t.str()); }, ::testing::ThrowsMessage<IoError>(HasSubstr("not a regular file")));
}

TEST(FileIo, LayersConvertIoErrorsToTheirOwnTypeWithTheSameMessage) {
  TempDir t;
  try {
    rethrow_io_errors_as<ErrorOfThisLayer>([&] { return read_small_file(t / "missing"); });
    FAIL() << "no error";
  } catch (const ErrorOfThisLayer& e) {
    EXPECT_THAT(e.what(), HasSubstr(t / "missing: cannot open"));
  }
  EXPECT_EQ(rethrow_io_errors_as<ErrorOfThisLayer>([] { return 7; }), 7);
  EXPECT_THROW(rethrow_io_errors_as<ErrorOfThisLayer>([] { throw std::logic_error("not I/O"); }), std::logic_error);
}

TEST(FileIo, ReadsCheckSizeAndComputeZlibsCrc) {
  TempDir t;
  std::string big(20 << 20, '\0');  // above the background-checksum threshold
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 2654435761u >> 24);
  for (const std::string& text : {std::string("hello, world"), big}) {
    write_file_atomic(t / "f", text);
    const uint32_t expected =
        static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const unsigned char*>(text.data()), text.size()));
    uint32_t crc = 0;
    auto buf = read_file(t / "f", static_cast<int64_t>(text.size()), &crc);
    EXPECT_EQ(std::string(buf->data(), buf->size()), text);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buf->data()) % 64, 0u);
    EXPECT_EQ(crc, expected);
    int64_t size = 0;
    uint32_t crc2 = 0;
    checksum_file(t / "f", &size, &crc2);
    EXPECT_EQ(size, static_cast<int64_t>(text.size()));
    EXPECT_EQ(crc2, expected);
    Crc32 c;
    c.update(text.data(), 5);
    c.update(text.data() + 5, text.size() - 5);
    EXPECT_EQ(c.value(), expected);
  }
  EXPECT_EQ(Crc32::hex(0xab), "000000ab");
}

TEST(FileIo, ExclusiveFileCountsAndChecksumsWhatItWrites) {
  TempDir t;
  ExclusiveFile f(t / "x");
  f.write("abc", 3);
  f.write("def", 3);
  f.fsync_and_close();
  EXPECT_EQ(f.bytes_written(), 6u);
  EXPECT_EQ(f.crc(), static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const unsigned char*>("abcdef"), 6)));
  EXPECT_EQ(read_small_file(t / "x"), "abcdef");
}

TEST(FileIo, FilePositionalWritesAndReads) {
  TempDir t;
  File f = File::open(t / "x", O_RDWR | O_CREAT | O_TRUNC);
  f.write_all_at("world", 5, 6);
  f.write_all_at("hello ", 6, 0);
  f.sync_data();
  EXPECT_EQ(f.size(), 11u);
  char buf[5];
  f.read_exact_at(buf, 5, 6);
  EXPECT_EQ(std::string(buf, 5), "world");
  f.close();
  EXPECT_FALSE(f.is_open());
  EXPECT_EQ(read_small_file(t / "x"), "hello world");
}

TEST(FileIo, FileLocksExcludeEachOtherAndFollowRenames) {
  TempDir t;
  fs::create_directories(t / "d");
  FileLock held = FileLock::lock(t / "d");
  ASSERT_TRUE(held.locked());
  EXPECT_FALSE(FileLock::try_lock(t / "d").locked());  // another open file description, even in this process
  fs::rename(t / "d", t / "e");
  EXPECT_FALSE(FileLock::try_lock(t / "e").locked());  // the lock went with the directory
  held = FileLock();
  FileLock again = FileLock::try_lock(t / "e");
  EXPECT_TRUE(again.locked());
  FileLock moved = std::move(again);
  EXPECT_TRUE(moved.locked());
  EXPECT_FALSE(FileLock::try_lock(t / "e").locked());

  // A lock file is created on demand; a missing path is an error, not "someone else holds it".
  EXPECT_THROW(FileLock::try_lock(t / ".lock"), IoError);
  FileLock file_lock = FileLock::try_lock(t / ".lock", FileLock::IfMissing::kCreateFile);
  EXPECT_TRUE(file_lock.locked());
  EXPECT_TRUE(fs::exists(t / ".lock"));
  EXPECT_FALSE(FileLock::try_lock(t / ".lock", FileLock::IfMissing::kCreateFile).locked());
}

TEST(FileIo, FsyncWorksOnFilesAndDirectories) {
  TempDir t;
  write_file_atomic(t / "f", "x");
  fsync_path(t / "f");
  fsync_path(t.str());
  fsync_parent(t / "f");
}
