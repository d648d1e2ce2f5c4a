// The Megatron-LM checkpoint readers' framing: the pickle decoder on pickles Python wrote
// (protocols 2 and 4: OrderedDict, ints of every width, floats, bytes, lists, tuples, an
// argparse.Namespace), its one-line errors, and the zip reader on stored archives with and
// without ZIP64 records (what torch.save writes for files past 4 GiB), built here byte by byte.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "checkpoint/torch_pickle.h"
#include "checkpoint/zip_reader.h"
#include "core/error.h"

using namespace mt;

namespace {

std::string unhex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(char(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

// pickle.dumps(OrderedDict([('a', 6), ('b', 1.5), ('c', -1), ('d', [1, 2**40, None, True, (2, 3)]),
//                           ('e', b'\x00\xff'), ('n', argparse.Namespace(x=3))]), protocol=P)
const char* kProtocol2 =
    "800263636f6c6c656374696f6e730a4f726465726564446963740a7100295271012858010000006171024b06580100000062710347"
    "3ff800000000000058010000006371044affffffff58010000006471055d7106284b018a060000000000014e884b024b0386710765"
    "5801000000657108635f636f646563730a656e636f64650a7109580300000000c3bf710a58060000006c6174696e31710b86710c52"
    "710d58010000006e710e6361726770617273650a4e616d6573706163650a710f298171107d711158010000007871124b037362752e";
const char* kProtocol4 =
    "8004958d000000000000008c0b636f6c6c656374696f6e73948c0b4f72646572656444696374949394295294288c0161944b068c01"
    "6294473ff80000000000008c0163944affffffff8c0164945d94284b018a060000000000014e884b024b038694658c016594430200"
    "ff948c016e948c086172677061727365948c094e616d6573706163659493942981947d948c0178944b037362752e";

void expect_value(const Pickle& p) {
  const PyObj* r = p.root();
  ASSERT_EQ(r->kind, PyObj::Dict);
  EXPECT_EQ(r->get("a")->i, 6);
  EXPECT_DOUBLE_EQ(r->get("b")->f, 1.5);
  EXPECT_EQ(r->get("c")->i, -1);
  const PyObj* d = r->get("d");
  ASSERT_EQ(d->kind, PyObj::List);
  ASSERT_EQ(d->items.size(), 5u);
  EXPECT_EQ(d->items[1]->i, int64_t(1) << 40);
  EXPECT_EQ(d->items[2]->kind, PyObj::None);
  EXPECT_TRUE(d->items[3]->b);
  ASSERT_EQ(d->items[4]->kind, PyObj::Tuple);
  EXPECT_EQ(d->items[4]->items[1]->i, 3);
  EXPECT_EQ(r->get("e")->kind, PyObj::Bytes);
  EXPECT_EQ(r->get("e")->s, std::string("\x00\xff", 2));
  const PyObj* n = r->get("n");
  ASSERT_EQ(n->kind, PyObj::Object);
  EXPECT_TRUE(n->callable->is_global("argparse.Namespace"));
  EXPECT_EQ(n->get("x")->i, 3);
  EXPECT_EQ(r->get("missing"), nullptr);
}

std::string error_of(const std::string& bytes) {
  try {
    Pickle p(bytes, "x.pkl");
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

void put(std::string& s, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s.push_back(char((v >> (8 * i)) & 0xFF));
}

// A stored zip of (name, data) entries; zip64: sizes and offsets only in ZIP64 extra fields and a
// ZIP64 end record, as miniz writes them past 4 GiB.
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries, bool zip64) {
  std::string out, cd;
  for (const auto& [name, data] : entries) {
    const uint64_t local = out.size();
    put(out, 0x04034b50, 4);
    put(out, 20, 2);
    put(out, 0, 2);
    put(out, 0, 2);  // stored
    put(out, 0, 4);  // time, date
    put(out, 0, 4);  // crc (not checked)
    put(out, zip64 ? 0xFFFFFFFF : data.size(), 4);
    put(out, zip64 ? 0xFFFFFFFF : data.size(), 4);
    put(out, name.size(), 2);
    put(out, 0, 2);
    out += name + data;
    put(cd, 0x02014b50, 4);
    put(cd, 45, 2);
    put(cd, 45, 2);
    put(cd, 0, 2);
    put(cd, 0, 2);
    put(cd, 0, 4);
    put(cd, 0, 4);
    put(cd, zip64 ? 0xFFFFFFFF : data.size(), 4);
    put(cd, zip64 ? 0xFFFFFFFF : data.size(), 4);
    put(cd, name.size(), 2);
    put(cd, zip64 ? 28 : 0, 2);
    put(cd, 0, 2);
    put(cd, 0, 2);
    put(cd, 0, 2);
    put(cd, 0, 4);
    put(cd, zip64 ? 0xFFFFFFFF : local, 4);
    cd += name;
    if (zip64) {  // usize, csize, local header offset
      put(cd, 0x0001, 2);
      put(cd, 24, 2);
      put(cd, data.size(), 8);
      put(cd, data.size(), 8);
      put(cd, local, 8);
    }
  }
  const uint64_t cd_at = out.size();
  out += cd;
  if (zip64) {
    const uint64_t end64 = out.size();
    put(out, 0x06064b50, 4);
    put(out, 44, 8);
    put(out, 45, 2);
    put(out, 45, 2);
    put(out, 0, 4);
    put(out, 0, 4);
    put(out, entries.size(), 8);
    put(out, entries.size(), 8);
    put(out, cd.size(), 8);
    put(out, cd_at, 8);
    put(out, 0x07064b50, 4);
    put(out, 0, 4);
    put(out, end64, 8);
    put(out, 1, 4);
  }
  put(out, 0x06054b50, 4);
  put(out, 0, 4);
  put(out, zip64 ? 0xFFFF : entries.size(), 2);
  put(out, zip64 ? 0xFFFF : entries.size(), 2);
  put(out, zip64 ? 0xFFFFFFFF : cd.size(), 4);
  put(out, zip64 ? 0xFFFFFFFF : cd_at, 4);
  put(out, 0, 2);
  return out;
}

}  // namespace

TEST(TorchPickle, DecodesWhatPythonWrites) {
  expect_value(Pickle(unhex(kProtocol2), "p2.pkl"));
  expect_value(Pickle(unhex(kProtocol4), "p4.pkl"));
}

TEST(TorchPickle, MalformedIsOneLineNamingTheByte) {
  EXPECT_EQ(error_of("\x80\x02}\xff."), "x.pkl: bad pickle at byte 3 (opcode 0xff): an opcode torch.save does not write");
  EXPECT_NE(error_of("\x80\x02}").find("(truncated?)"), std::string::npos);
  EXPECT_NE(error_of(std::string("\x80\x02X\xff\xff\x00\x00" "ab", 9)).find("truncated"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02" "0.").find("stack underflow"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02h\x05.").find("memo 5 was never stored"), std::string::npos);
  EXPECT_NE(error_of("\x80\x07}.").find("protocol 7"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02}}.").find("2 objects on the stack"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02}.x").find("1 bytes after STOP"), std::string::npos);
  // A persistent id that is not torch's storage tuple.
  EXPECT_NE(error_of("\x80\x02K\x01Q.").find("persistent id"), std::string::npos);
}

TEST(TorchPickle, CyclesAreFine) {
  // l = []; l.append(l)
  const Pickle p(std::string("\x80\x02]q\x00h\x00" "a.", 9), "cycle.pkl");
  ASSERT_EQ(p.root()->items.size(), 1u);
  EXPECT_EQ(p.root()->items[0], p.root());
}

TEST(ZipArchive, ReadsStoredEntriesWithAndWithoutZip64) {
  for (bool zip64 : {false, true}) {
    const std::string z = make_zip({{"archive/data.pkl", "abc"}, {"archive/data/0", std::string(10, 'x')}}, zip64);
    const ZipArchive a(reinterpret_cast<const uint8_t*>(z.data()), z.size(), "a.pt");
    EXPECT_EQ(a.get("archive/data.pkl"), "abc") << zip64;
    EXPECT_EQ(a.get("archive/data/0"), std::string(10, 'x')) << zip64;
    EXPECT_EQ(a.entries().size(), 2u);
  }
}

TEST(ZipArchive, TruncatedOrForeignIsOneLine) {
  const std::string z = make_zip({{"archive/data.pkl", "abc"}}, false);
  for (size_t cut : {size_t(0), size_t(10), z.size() - 1, z.size() / 2}) {
    try {
      ZipArchive a(reinterpret_cast<const uint8_t*>(z.data()), cut, "a.pt");
      FAIL() << "accepted " << cut << " bytes";
    } catch (const UserError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("a.pt: not a torch.save zip archive: ", 0), 0u) << e.what();
    }
  }
  std::string compressed = z;
  compressed[8] = 8;  // the local header's method: deflate (the central directory's is what counts)
  compressed[z.find("PK\x01\x02") + 10] = 8;
  try {
    ZipArchive a(reinterpret_cast<const uint8_t*>(compressed.data()), compressed.size(), "a.pt");
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("is compressed"), std::string::npos) << e.what();
  }
}
