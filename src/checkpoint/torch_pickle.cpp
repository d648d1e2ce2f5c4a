#include "checkpoint/torch_pickle.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <map>

#include "core/error.h"

namespace mt {

namespace {

struct StorageType {
  const char* name;
  size_t elem_size;
};
constexpr StorageType kStorageTypes[] = {
    {"FloatStorage", 4}, {"BFloat16Storage", 2}, {"HalfStorage", 2},  {"DoubleStorage", 8},
    {"LongStorage", 8},  {"IntStorage", 4},      {"ShortStorage", 2}, {"CharStorage", 1},
    {"ByteStorage", 1},  {"BoolStorage", 1},     {"ComplexFloatStorage", 8}, {"ComplexDoubleStorage", 16},
    {"Float8_e4m3fnStorage", 1}, {"Float8_e5m2Storage", 1}};

// The most objects a pickle may make and the deepest MARK nesting (far above any checkpoint's).
constexpr size_t kMaxStack = size_t(1) << 24;

}  // namespace

const PyObj* PyObj::get(std::string_view key) const {
  const PyObj* d = kind == Dict ? this : attrs();
  if (!d || d->kind != Dict) return nullptr;
  for (auto it = d->dict.rbegin(); it != d->dict.rend(); ++it)
    if (it->first->kind == Str && it->first->s == key) return it->second;
  return nullptr;
}

const PyObj* PyObj::attrs() const {
  if (kind == Dict) return this;
  if (kind != Object || !state) return nullptr;
  if (state->kind == Dict) return state;
  // (dict or None, slots dict): objects with __slots__.
  if (state->kind == Tuple && state->items.size() == 2) {
    if (state->items[0]->kind == Dict) return state->items[0];
    if (state->items[1]->kind == Dict) return state->items[1];
  }
  return nullptr;
}

PyObj* Pickle::make(PyObj::Kind k) {
  if (arena_.size() >= kMaxStack) MT_USER_ERROR("{}: pickle makes more than {} objects", what_, kMaxStack);
  arena_.push_back(std::make_unique<PyObj>());
  arena_.back()->kind = k;
  return arena_.back().get();
}

Pickle::Pickle(std::string_view data, std::string what) : what_(std::move(what)) {
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  const size_t n = data.size();
  size_t pos = 0;
  std::vector<PyObj*> stack;
  std::vector<size_t> marks;
  std::map<uint64_t, PyObj*> memo;
  size_t op_at = 0;
  uint8_t op = 0;

  auto fail = [&](const std::string& why) -> void {
    MT_USER_ERROR("{}: bad pickle at byte {} (opcode 0x{:02x}): {}", what_, op_at, op, why);
  };
  auto need = [&](size_t k) {
    if (n - pos < k) fail(fmt::format("needs {} more bytes, {} left (truncated?)", k, n - pos));
  };
  auto uint = [&](int k) -> uint64_t {
    need(size_t(k));
    uint64_t v = 0;
    for (int i = k - 1; i >= 0; --i) v = (v << 8) | p[pos + size_t(i)];
    pos += size_t(k);
    return v;
  };
  auto bytes = [&](uint64_t k) -> std::string {
    if (k > n - pos) fail(fmt::format("a {}-byte string with {} bytes left (truncated?)", k, n - pos));
    std::string s(reinterpret_cast<const char*>(p + pos), size_t(k));
    pos += size_t(k);
    return s;
  };
  auto line = [&]() -> std::string {
    const size_t start = pos;
    while (pos < n && p[pos] != '\n') ++pos;
    if (pos == n) fail("a text argument without its newline (truncated?)");
    return std::string(reinterpret_cast<const char*>(p + start), pos++ - start);
  };
  auto push = [&](PyObj* o) {
    if (stack.size() >= kMaxStack) fail("the stack is too deep");
    stack.push_back(o);
  };
  auto pop = [&]() -> PyObj* {
    if (stack.empty() || (!marks.empty() && stack.size() <= marks.back())) fail("stack underflow");
    PyObj* o = stack.back();
    stack.pop_back();
    return o;
  };
  auto top = [&]() -> PyObj* {
    if (stack.empty() || (!marks.empty() && stack.size() <= marks.back())) fail("stack underflow");
    return stack.back();
  };
  auto pop_mark = [&]() -> std::vector<PyObj*> {
    if (marks.empty()) fail("no MARK to pop to");
    std::vector<PyObj*> items(stack.begin() + std::ptrdiff_t(marks.back()), stack.end());
    stack.resize(marks.back());
    marks.pop_back();
    return items;
  };
  auto integer = [&](int64_t v) {
    PyObj* o = make(PyObj::Int);
    o->i = v;
    return o;
  };
  auto string = [&](PyObj::Kind k, std::string s) {
    PyObj* o = make(k);
    o->s = std::move(s);
    return o;
  };
  auto global = [&](const std::string& module, const std::string& name) {
    return string(PyObj::Global, module + "." + name);
  };
  auto tuple = [&](std::vector<PyObj*> items) {
    PyObj* o = make(PyObj::Tuple);
    o->items = std::move(items);
    return o;
  };
  auto set_items = [&](PyObj* d, const std::vector<PyObj*>& kv) {
    if (kv.size() % 2) fail("SETITEMS with an odd number of items");
    if (d->kind != PyObj::Dict && d->kind != PyObj::Object) fail("SETITEM on something not a dict");
    // A key set twice stays twice (get() takes the last): no search per item, so a dict of many
    // keys decodes in linear time.
    for (size_t i = 0; i < kv.size(); i += 2) d->dict.emplace_back(kv[i], kv[i + 1]);
  };
  auto append = [&](PyObj* l, const std::vector<PyObj*>& xs) {
    if (l->kind != PyObj::List && l->kind != PyObj::Object && l->kind != PyObj::Set) fail("APPEND to something not a list");
    l->items.insert(l->items.end(), xs.begin(), xs.end());
  };
  // REDUCE / NEWOBJ: the few callables we understand become data; the rest opaque objects.
  auto call = [&](PyObj* f, PyObj* args) -> PyObj* {
    if (args->kind != PyObj::Tuple) fail("REDUCE/NEWOBJ arguments are not a tuple");
    const std::vector<PyObj*>& a = args->items;
    if (f->is_global("collections.OrderedDict") || f->is_global("builtins.dict")) {
      PyObj* d = make(PyObj::Dict);
      if (!a.empty() && a[0]->kind == PyObj::List)
        for (PyObj* kv : a[0]->items) {
          if (kv->kind != PyObj::Tuple || kv->items.size() != 2) fail("OrderedDict items are not pairs");
          set_items(d, kv->items);
        }
      return d;
    }
    if (f->is_global("torch.Size")) {
      if (a.size() != 1 || a[0]->kind != PyObj::Tuple) fail("torch.Size of something not a tuple");
      return a[0];
    }
    if (f->is_global("_codecs.encode")) {  // protocol 2's bytes: encode(str, "latin1")
      if (a.empty() || a[0]->kind != PyObj::Str) fail("_codecs.encode of something not a string");
      std::string out;  // the UTF-8 string's code points, each one byte (latin-1)
      const std::string& s = a[0]->s;
      for (size_t i = 0; i < s.size(); ++i) {
        const auto c = uint8_t(s[i]);
        if (c < 0x80) out.push_back(char(c));
        else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) out.push_back(char(((c & 0x1F) << 6) | (uint8_t(s[++i]) & 0x3F)));
        else fail("_codecs.encode of a string outside latin-1");
      }
      return string(PyObj::Bytes, out);
    }
    if (f->is_global("torch._utils._rebuild_tensor_v2") || f->is_global("torch._utils._rebuild_tensor")) {
      if (a.size() < 4 || a[0]->kind != PyObj::Storage || !a[1]->is_int() || a[2]->kind != PyObj::Tuple ||
          a[3]->kind != PyObj::Tuple || a[2]->items.size() != a[3]->items.size())
        fail("_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, ...)");
      PyObj* t = make(PyObj::Tensor);
      t->tensor = std::make_unique<TorchTensorRef>(*a[0]->tensor);
      t->tensor->offset = a[1]->i;
      for (size_t d = 0; d < a[2]->items.size(); ++d) {
        if (!a[2]->items[d]->is_int() || !a[3]->items[d]->is_int()) fail("a tensor size or stride is not an integer");
        t->tensor->size.push_back(a[2]->items[d]->i);
        t->tensor->stride.push_back(a[3]->items[d]->i);
      }
      return t;
    }
    if (f->is_global("torch._utils._rebuild_parameter") || f->is_global("torch._utils._rebuild_parameter_with_state")) {
      if (a.empty() || a[0]->kind != PyObj::Tensor) fail("_rebuild_parameter of something not a tensor");
      return a[0];
    }
    PyObj* o = make(PyObj::Object);
    o->callable = f;
    o->items = a;
    return o;
  };

  bool stopped = false;
  while (!stopped) {
    op_at = pos;
    need(1);
    op = p[pos++];
    switch (op) {
      case 0x80: {  // PROTO
        const uint64_t v = uint(1);
        if (v < 2 || v > 5) fail(fmt::format("protocol {} (expected 2 to 5)", v));
        break;
      }
      case 0x95: uint(8); break;  // FRAME: a length hint
      case '.': stopped = true; break;  // STOP
      case '(': marks.push_back(stack.size()); break;  // MARK
      case '0': pop(); break;  // POP
      case '1': pop_mark(); break;  // POP_MARK
      case '2': push(top()); break;  // DUP
      case 'N': push(make(PyObj::None)); break;
      case 0x88:
      case 0x89: {  // NEWTRUE, NEWFALSE
        PyObj* o = make(PyObj::Bool);
        o->b = op == 0x88;
        o->i = o->b;
        push(o);
        break;
      }
      case 'J': push(integer(int32_t(uint32_t(uint(4))))); break;  // BININT
      case 'K': push(integer(int64_t(uint(1)))); break;  // BININT1
      case 'M': push(integer(int64_t(uint(2)))); break;  // BININT2
      case 'I': {  // INT (text; "00"/"01" are False/True)
        const std::string s = line();
        try {
          size_t used = 0;
          const long long v = std::stoll(s, &used);
          if (used != s.size()) throw std::invalid_argument(s);
          push(integer(v));
        } catch (const std::exception&) {
          fail("INT of \"" + s.substr(0, 32) + "\"");
        }
        break;
      }
      case 0x8a:
      case 0x8b: {  // LONG1, LONG4: little-endian two's complement
        const uint64_t k = uint(op == 0x8a ? 1 : 4);
        const std::string b = bytes(k);
        if (k > 8) {
          push(make(PyObj::BigInt));
          break;
        }
        uint64_t v = 0;
        for (size_t i = k; i-- > 0;) v = (v << 8) | uint8_t(b[i]);
        if (k > 0 && k < 8 && (uint8_t(b[k - 1]) & 0x80)) v |= ~uint64_t(0) << (8 * k);
        push(integer(int64_t(v)));
        break;
      }
      case 'G': {  // BINFLOAT: big-endian double
        need(8);
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = (v << 8) | p[pos + size_t(i)];
        pos += 8;
        PyObj* o = make(PyObj::Float);
        std::memcpy(&o->f, &v, 8);
        push(o);
        break;
      }
      case 'X': push(string(PyObj::Str, bytes(uint(4)))); break;  // BINUNICODE
      case 0x8c: push(string(PyObj::Str, bytes(uint(1)))); break;  // SHORT_BINUNICODE
      case 0x8d: push(string(PyObj::Str, bytes(uint(8)))); break;  // BINUNICODE8
      case 'T': push(string(PyObj::Str, bytes(uint(4)))); break;  // BINSTRING (Python 2 str)
      case 'U': push(string(PyObj::Str, bytes(uint(1)))); break;  // SHORT_BINSTRING
      case 'B': push(string(PyObj::Bytes, bytes(uint(4)))); break;  // BINBYTES
      case 'C': push(string(PyObj::Bytes, bytes(uint(1)))); break;  // SHORT_BINBYTES
      case 0x8e: push(string(PyObj::Bytes, bytes(uint(8)))); break;  // BINBYTES8
      case 0x96: push(string(PyObj::Bytes, bytes(uint(8)))); break;  // BYTEARRAY8
      case ')': push(tuple({})); break;  // EMPTY_TUPLE
      case 't': push(tuple(pop_mark())); break;  // TUPLE
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        const size_t k = size_t(op - 0x84);
        std::vector<PyObj*> items(k);
        for (size_t i = k; i-- > 0;) items[i] = pop();
        push(tuple(std::move(items)));
        break;
      }
      case ']': push(make(PyObj::List)); break;  // EMPTY_LIST
      case 'l': {  // LIST
        PyObj* o = make(PyObj::List);
        o->items = pop_mark();
        push(o);
        break;
      }
      case 'a': {  // APPEND
        PyObj* x = pop();
        append(top(), {x});
        break;
      }
      case 'e': {  // APPENDS
        std::vector<PyObj*> xs = pop_mark();
        append(top(), xs);
        break;
      }
      case '}': push(make(PyObj::Dict)); break;  // EMPTY_DICT
      case 'd': {  // DICT
        PyObj* o = make(PyObj::Dict);
        set_items(o, pop_mark());
        push(o);
        break;
      }
      case 's': {  // SETITEM
        PyObj* v = pop();
        PyObj* k = pop();
        set_items(top(), {k, v});
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<PyObj*> kv = pop_mark();
        set_items(top(), kv);
        break;
      }
      case 0x8f: push(make(PyObj::Set)); break;  // EMPTY_SET
      case 0x90: {  // ADDITEMS
        std::vector<PyObj*> xs = pop_mark();
        append(top(), xs);
        break;
      }
      case 0x91: {  // FROZENSET
        PyObj* o = make(PyObj::Set);
        o->items = pop_mark();
        push(o);
        break;
      }
      case 'c': {  // GLOBAL
        const std::string module = line();
        push(global(module, line()));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        PyObj* name = pop();
        PyObj* module = pop();
        if (!module->is_str() || !name->is_str()) fail("STACK_GLOBAL of something not two strings");
        push(global(module->s, name->s));
        break;
      }
      case 'R': {  // REDUCE
        PyObj* args = pop();
        PyObj* f = pop();
        push(call(f, args));
        break;
      }
      case 0x81: {  // NEWOBJ
        PyObj* args = pop();
        PyObj* cls = pop();
        push(call(cls, args));
        break;
      }
      case 0x92: {  // NEWOBJ_EX
        pop();  // kwargs
        PyObj* args = pop();
        PyObj* cls = pop();
        push(call(cls, args));
        break;
      }
      case 'b': {  // BUILD
        PyObj* st = pop();
        PyObj* o = top();
        if (o->kind == PyObj::Object) o->state = st;
        break;  // tensors (_rebuild_parameter_with_state) and the rest: the state is not needed
      }
      case 'Q': {  // BINPERSID: torch's ('storage', storage_type, key, location, numel)
        PyObj* pid = pop();
        const auto& a = pid->items;
        if (pid->kind != PyObj::Tuple || a.size() != 5 || !a[0]->is_str() || a[0]->s != "storage" ||
            a[1]->kind != PyObj::Global || !a[2]->is_str() || !a[4]->is_int())
          fail("a persistent id that is not torch's ('storage', type, key, location, numel)");
        PyObj* s = make(PyObj::Storage);
        s->tensor = std::make_unique<TorchTensorRef>();
        const std::string& type = a[1]->s;
        s->tensor->storage_type = type.substr(type.rfind('.') + 1);
        for (const StorageType& t : kStorageTypes)
          if (s->tensor->storage_type == t.name) s->tensor->elem_size = t.elem_size;
        if (s->tensor->elem_size == 0) fail("storage type " + type + " is not one torch.save writes");
        s->tensor->storage_key = a[2]->s;
        s->tensor->storage_numel = a[4]->i;
        push(s);
        break;
      }
      case 'q': memo[uint(1)] = top(); break;  // BINPUT
      case 'r': memo[uint(4)] = top(); break;  // LONG_BINPUT
      case 0x94: {  // MEMOIZE
        const uint64_t k = memo.size();
        memo[k] = top();
        break;
      }
      case 'h':
      case 'j': {  // BINGET, LONG_BINGET
        const uint64_t k = uint(op == 'h' ? 1 : 4);
        auto it = memo.find(k);
        if (it == memo.end()) fail(fmt::format("memo {} was never stored", k));
        push(it->second);
        break;
      }
      case 'p':
      case 'g': {  // PUT, GET (text)
        const std::string s = line();
        uint64_t k = 0;
        try {
          k = std::stoull(s);
        } catch (const std::exception&) {
          fail("memo index \"" + s.substr(0, 32) + "\"");
        }
        if (op == 'p') {
          memo[k] = top();
        } else {
          auto it = memo.find(k);
          if (it == memo.end()) fail(fmt::format("memo {} was never stored", k));
          push(it->second);
        }
        break;
      }
      default: fail("an opcode torch.save does not write");
    }
  }
  if (stack.size() != 1 || !marks.empty())
    fail(fmt::format("STOP with {} objects on the stack and {} open MARKs (expected one object)", stack.size(),
                     marks.size()));
  if (pos != n) fail(fmt::format("{} bytes after STOP", n - pos));
  root_ = stack[0];
}

bool torch_storage_dtype(std::string_view t, DType& out) {
  if (t == "FloatStorage") out = DType::F32;
  else if (t == "BFloat16Storage") out = DType::BF16;
  else if (t == "HalfStorage") out = DType::F16;
  else return false;
  return true;
}

TorchSaveFile::TorchSaveFile(const uint8_t* data, uint64_t size, std::string what)
    : zip_(data, size, std::move(what)) {
  for (const auto& [name, e] : zip_.entries()) {
    const size_t slash = name.find('/');
    if (slash != std::string::npos && name.substr(slash) == "/data.pkl") {
      if (!prefix_.empty()) MT_USER_ERROR("{}: two data.pkl entries (expected one torch.save archive)", zip_.what());
      prefix_ = name.substr(0, slash + 1);
    }
  }
  if (prefix_.empty()) MT_USER_ERROR("{}: no NAME/data.pkl entry (not a torch.save file?)", zip_.what());
  if (zip_.contains(prefix_ + "byteorder") && zip_.get(prefix_ + "byteorder") != "little")
    MT_USER_ERROR("{}: byteorder \"{}\" (expected little)", zip_.what(), std::string(zip_.get(prefix_ + "byteorder")));
  pickle_ = std::make_unique<Pickle>(zip_.get(prefix_ + "data.pkl"), zip_.what() + " (" + prefix_ + "data.pkl)");
}

Tensor TorchSaveFile::tensor(const PyObj* t, const std::string& name) const {
  MT_CHECK(t && t->kind == PyObj::Tensor, "not a tensor");
  const TorchTensorRef& r = *t->tensor;
  DType dt;
  if (!torch_storage_dtype(r.storage_type, dt))
    MT_USER_ERROR("{}: tensor {} is a {} (expected FloatStorage, BFloat16Storage or HalfStorage)", what(), name,
                  r.storage_type);
  const std::string_view bytes = zip_.get(prefix_ + "data/" + r.storage_key);
  if (r.storage_numel < 0 || uint64_t(r.storage_numel) > bytes.size() ||
      uint64_t(r.storage_numel) * r.elem_size != bytes.size())
    MT_USER_ERROR("{}: storage {} of tensor {} holds {} bytes, its pickle says {} elements of {} bytes", what(),
                  r.storage_key, name, bytes.size(), r.storage_numel, r.elem_size);
  // The elements the view reaches: [offset, offset + sum((size-1)*stride)] within the storage.
  // Every product below stays under 2^62: sizes and strides are bounded by the storage (<= 2^40).
  constexpr int64_t kMax = int64_t(1) << 40;
  if (r.offset < 0 || r.offset > kMax) MT_USER_ERROR("{}: tensor {} has offset {}", what(), name, r.offset);
  int64_t numel = 1, last = r.offset;
  for (size_t d = 0; d < r.size.size(); ++d) {
    if (r.size[d] < 0 || r.stride[d] < 0 || r.size[d] > kMax || r.stride[d] > kMax)
      MT_USER_ERROR("{}: tensor {} has size/stride {}/{} in dimension {}", what(), name, r.size[d], r.stride[d], d);
    if (r.size[d] > 0 && numel > kMax / r.size[d]) MT_USER_ERROR("{}: tensor {} is too large", what(), name);
    numel *= r.size[d];
    if (r.size[d] > 0 && r.stride[d] > 0 && r.size[d] - 1 > (kMax - last) / r.stride[d])
      MT_USER_ERROR("{}: tensor {} reaches past {} elements", what(), name, kMax);
    if (r.size[d] > 0) last += (r.size[d] - 1) * r.stride[d];
  }
  if (numel > 0 && last >= r.storage_numel)
    MT_USER_ERROR("{}: tensor {} ({} at offset {}) reaches past its storage of {} elements", what(), name,
                  shape_str(r.size), r.offset, r.storage_numel);
  Tensor out = Tensor::empty(r.size, dt);
  auto* dst = static_cast<uint8_t*>(out.raw());
  const auto* src = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t es = r.elem_size;
  // Copy in runs of the innermost contiguous dimensions.
  std::vector<int64_t> idx(r.size.size(), 0);
  int64_t inner = 1;
  int d_in = int(r.size.size());
  while (d_in > 0 && r.stride[size_t(d_in - 1)] == inner) inner *= r.size[size_t(--d_in)];
  for (int64_t done = 0; done < numel; done += inner) {
    int64_t at = r.offset;
    for (int d = 0; d < d_in; ++d) at += idx[size_t(d)] * r.stride[size_t(d)];
    std::memcpy(dst + size_t(done) * es, src + size_t(at) * es, size_t(inner) * es);
    for (int d = d_in - 1; d >= 0; --d) {
      if (++idx[size_t(d)] < r.size[size_t(d)]) break;
      idx[size_t(d)] = 0;
    }
  }
  if (drop_pages_) {  // whole pages inside the storage only: a neighbour on a shared page stays
    const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
    const uintptr_t a = (reinterpret_cast<uintptr_t>(src) + page - 1) / page * page;
    const uintptr_t b = (reinterpret_cast<uintptr_t>(src) + bytes.size()) / page * page;
    if (b > a) ::madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);
  }
  return out;
}

}  // namespace mt
