#include "state/crdt/sequence.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace assistd::state::crdt {
namespace {
// An edit adds at most two runs to a chunk before it may split, so a chunk's
// vector never grows past 32.
constexpr size_t kMaxRunsPerChunk = 30;
constexpr size_t kRebuildRunsPerChunk = 16;
}  // namespace

Sequence::Sequence(bool is_text) : is_text_(is_text) {
    chunks_.push_back(std::make_unique<Chunk>());
}
Sequence::~Sequence() = default;

uint32_t Sequence::replica_index(ReplicaId replica) {
    uint32_t index;
    if (find_replica(replica, index)) return index;
    replicas_.push_back(replica);
    return static_cast<uint32_t>(replicas_.size() - 1);
}

bool Sequence::find_replica(ReplicaId replica, uint32_t& index) const {
    // A sequence is edited by a handful of replicas: a scan beats a map.
    for (size_t i = 0; i < replicas_.size(); ++i) {
        if (replicas_[i] == replica) {
            index = static_cast<uint32_t>(i);
            return true;
        }
    }
    return false;
}

uint32_t Sequence::delete_index(OpId del) {
    // One delete op removes consecutive ranges: it is usually the last one named.
    if (deletes_.empty() || deletes_.back() != del) deletes_.push_back(del);
    return static_cast<uint32_t>(deletes_.size());
}

uint32_t Sequence::text_advance(uint32_t byte, uint64_t n) const {
    // chars_ is valid UTF-8 and data()[size()] is '\0', so the scan stops in
    // bounds. Eight ASCII code points span eight bytes: skip those a word at a time.
    const char* s = chars_.data();
    for (; n >= 8; n -= 8, byte += 8) {
        uint64_t word;
        std::memcpy(&word, s + byte, 8);
        if (word & 0x8080808080808080ull) break;
    }
    for (; n > 0; --n) {
        ++byte;
        while ((static_cast<unsigned char>(s[byte]) & 0xC0) == 0x80) ++byte;
    }
    return byte;
}

uint32_t Sequence::content_at(const SeqRun& r, uint32_t off) const {
    if (!r.visible()) return 0;  // deleted content is never read again
    return is_text_ ? text_advance(r.content, off) : r.content + off;
}

bool Sequence::content_follows(const SeqRun& a, uint32_t content) const {
    if (!is_text_) return a.content + a.len == content;
    // Finding where a UTF-8 run ends costs a scan; the arena tail says it at once.
    return a.replica == tail_replica_ && a.lamport + a.len - 1 == tail_lamport_ &&
           content == tail_end_;
}

bool Sequence::same_deletion(const SeqRun& a, const SeqRun& b) const {
    return a.del == b.del || (!a.visible() && !b.visible() && del_of(a) == del_of(b));
}

uint32_t Sequence::add_chars(std::u32string_view chars) {
    const auto off = static_cast<uint32_t>(chars_.size());
    for (char32_t c : chars) {
        if (c < 0x80)
            chars_.push_back(static_cast<char>(c));
        else
            utf8_append(chars_, c);
    }
    return off;
}

uint32_t Sequence::add_values(std::vector<Value> values) {
    const auto off = static_cast<uint32_t>(values_.size());
    for (auto& v : values) values_.push_back(std::move(v));
    return off;
}

bool Sequence::at_end(const Pos& p) const {
    return p.chunk + 1 >= chunks_.size() && p.run >= chunks_[p.chunk]->runs.size();
}

void Sequence::normalize(Pos& p) const {
    for (;;) {
        const auto& runs = chunks_[p.chunk]->runs;
        if (p.run < runs.size() && p.off >= runs[p.run].len) {
            ++p.run;
            p.off = 0;
            continue;
        }
        if (p.run >= runs.size() && p.chunk + 1 < chunks_.size()) {
            ++p.chunk;
            p.run = 0;
            p.off = 0;
            continue;
        }
        return;
    }
}

// The pos-th visible element (pos < visible_length()).
Sequence::Pos Sequence::locate_visible(uint64_t pos) {
    if (!cache_valid_) {
        cache_valid_ = true;
        cache_chunk_ = 0;
        cache_before_ = 0;
    }
    size_t ci = cache_chunk_;
    uint64_t before = cache_before_;
    while (pos < before) {
        --ci;
        before -= chunks_[ci]->visible;
    }
    while (pos >= before + chunks_[ci]->visible) {
        before += chunks_[ci]->visible;
        ++ci;
    }
    cache_chunk_ = ci;
    cache_before_ = before;
    uint64_t rel = pos - before;
    const auto& runs = chunks_[ci]->runs;
    for (size_t ri = 0; ri < runs.size(); ++ri) {
        if (!runs[ri].visible()) continue;
        if (rel < runs[ri].len) return Pos{ci, ri, static_cast<uint32_t>(rel)};
        rel -= runs[ri].len;
    }
    assert(false && "chunk visible count out of sync");
    return Pos{ci, runs.size(), 0};
}

void Sequence::note_index(const SeqRun& run, Chunk* chunk) {
    if (index_stale_) return;
    index_log_.push_back(IndexNote{run.lamport, run.replica, run.len, chunk});
    // Replaying more notes than there are chunks' worth of runs costs more than a rebuild.
    if (index_log_.size() > 64 + chunks_.size() * 4) {
        index_stale_ = true;
        index_log_ = {};
        index_added_.clear();
    }
}

void Sequence::sync_index() {
    for (size_t k = orders_valid_; k < chunks_.size(); ++k) chunks_[k]->order = k;
    orders_valid_ = chunks_.size();
    if (!index_stale_) {
        for (const IndexNote& n : index_log_) {
            index_set({n.replica, n.lamport}, n.chunk);
            // Entries of runs merged into this one must follow it to its chunk.
            const IndexKey from{n.replica, n.lamport}, to{n.replica, n.lamport + n.len};
            auto b = std::upper_bound(index_base_.begin(), index_base_.end(), from, key_below);
            for (; b != index_base_.end() && b->key < to; ++b) b->chunk = n.chunk;
            for (auto a = index_added_.upper_bound(from); a != index_added_.end() && a->first < to;
                 ++a) {
                a->second = n.chunk;
            }
        }
        index_log_.clear();
        // Lookups are binary searches in the sorted part: keep the tree beside it small.
        if (index_added_.size() <= 64 + index_base_.size() / 2) return;
    }
    index_base_.clear();
    index_added_.clear();
    for (const auto& c : chunks_) {
        for (const SeqRun& r : c->runs)
            index_base_.push_back(IndexEntry{{r.replica, r.lamport}, c.get()});
    }
    std::sort(index_base_.begin(), index_base_.end(),
              [](const IndexEntry& x, const IndexEntry& y) { return x.key < y.key; });
    index_stale_ = false;
}

bool Sequence::key_below(const IndexKey& key, const IndexEntry& e) {
    return key < e.key;
}

void Sequence::index_set(IndexKey key, Chunk* chunk) {
    auto b = std::upper_bound(index_base_.begin(), index_base_.end(), key, key_below);
    if (b != index_base_.begin() && std::prev(b)->key == key)
        std::prev(b)->chunk = chunk;
    else
        index_added_[key] = chunk;
}

const Sequence::Chunk* Sequence::index_floor(IndexKey key) const {
    // The entry with the largest key <= key, from either part (no key is in both).
    const IndexEntry* best = nullptr;
    auto b = std::upper_bound(index_base_.begin(), index_base_.end(), key, key_below);
    if (b != index_base_.begin()) best = &*std::prev(b);
    auto a = index_added_.upper_bound(key);
    if (a != index_added_.begin() && (!best || std::prev(a)->first > best->key)) {
        --a;
        return a->first.first == key.first ? a->second : nullptr;
    }
    return best && best->key.first == key.first ? best->chunk : nullptr;
}

bool Sequence::index_next(IndexKey key, uint64_t& lamport) const {
    // The smallest key > key of the same replica, from either part.
    bool found = false;
    auto b = std::upper_bound(index_base_.begin(), index_base_.end(), key, key_below);
    if (b != index_base_.end() && b->key.first == key.first) {
        lamport = b->key.second;
        found = true;
    }
    auto a = index_added_.upper_bound(key);
    if (a != index_added_.end() && a->first.first == key.first &&
        (!found || a->first.second < lamport)) {
        lamport = a->first.second;
        found = true;
    }
    return found;
}

bool Sequence::locate_id(OpId id, Pos& out) {
    uint32_t replica;
    if (!find_replica(id.replica, replica)) return false;
    sync_index();
    const Chunk* chunk = index_floor({replica, id.lamport});
    if (!chunk) return false;
    const auto& runs = chunk->runs;
    for (size_t ri = 0; ri < runs.size(); ++ri) {
        const SeqRun& r = runs[ri];
        if (r.replica == replica && id.lamport >= r.lamport && id.lamport < r.lamport + r.len) {
            out = Pos{chunk->order, ri, static_cast<uint32_t>(id.lamport - r.lamport)};
            return true;
        }
    }
    return false;
}

void Sequence::split_run(size_t ci, size_t ri, uint32_t off) {
    Chunk& c = *chunks_[ci];
    SeqRun right = c.runs[ri];
    right.lamport += off;
    right.len -= off;
    right.content = content_at(c.runs[ri], off);
    c.runs[ri].len = off;
    c.runs.insert(c.runs.begin() + static_cast<ptrdiff_t>(ri) + 1, right);
    note_index(right, &c);
}

size_t Sequence::maybe_split_chunk(size_t ci) {
    Chunk& c = *chunks_[ci];
    if (c.runs.size() <= kMaxRunsPerChunk) return 0;
    auto fresh = std::make_unique<Chunk>();
    const size_t half = c.runs.size() / 2;
    fresh->runs.reserve(kMaxRunsPerChunk + 2);
    fresh->runs.assign(c.runs.begin() + static_cast<ptrdiff_t>(half), c.runs.end());
    c.runs.resize(half);
    for (const SeqRun& r : fresh->runs) {
        if (r.visible()) fresh->visible += r.len;
        note_index(r, fresh.get());
    }
    c.visible -= fresh->visible;
    chunks_.insert(chunks_.begin() + static_cast<ptrdiff_t>(ci) + 1, std::move(fresh));
    orders_valid_ = std::min(orders_valid_, ci + 1);
    if (cache_valid_ && cache_chunk_ > ci) ++cache_chunk_;
    return half;
}

Sequence::Pos Sequence::insert_at(Pos gap, const SeqRun& run) {
    if (gap.run < chunks_[gap.chunk]->runs.size() &&
        gap.off >= chunks_[gap.chunk]->runs[gap.run].len) {
        ++gap.run;
        gap.off = 0;
    }
    if (gap.run < chunks_[gap.chunk]->runs.size() && gap.off > 0) {
        split_run(gap.chunk, gap.run, gap.off);
        ++gap.run;
        gap.off = 0;
    }
    Chunk& c = *chunks_[gap.chunk];
    SeqRun* prev = gap.run > 0 ? &c.runs[gap.run - 1] : nullptr;
    Pos at{gap.chunk, gap.run, 0};  // the run holding the new elements, at its end
    if (prev && prev->visible() && run.visible() && prev->replica == run.replica &&
        prev->lamport + prev->len == run.lamport && content_follows(*prev, run.content)) {
        prev->len += run.len;
        --at.run;
    } else {
        c.runs.insert(c.runs.begin() + static_cast<ptrdiff_t>(gap.run), run);
        note_index(run, &c);
    }
    if (is_text_) {
        tail_replica_ = run.replica;
        tail_lamport_ = run.lamport + run.len - 1;
        tail_end_ = static_cast<uint32_t>(chars_.size());
    }
    if (run.visible()) {
        c.visible += run.len;
        visible_ += run.len;
    }
    const size_t half = maybe_split_chunk(gap.chunk);
    if (half > 0 && at.run >= half) {
        ++at.chunk;
        at.run -= half;
    }
    return at;
}

OpId Sequence::insert_local(uint64_t pos, OpId first, uint32_t len, uint32_t content) {
    const SeqRun run{first.lamport, replica_index(first.replica), len, content, 0};
    if (typing_ && pos == typing_pos_) {
        // Typing on: the origin ends the run the last insert went into.
        Chunk& c = *chunks_[typing_->chunk];
        SeqRun& r = c.runs[typing_->run];
        const OpId origin = id_of(r, r.len - 1);
        if (r.replica == run.replica && r.lamport + r.len == run.lamport &&
            content_follows(r, content)) {
            r.len += len;
            c.visible += len;
            visible_ += len;
            tail_replica_ = run.replica;
            tail_lamport_ = run.lamport + len - 1;
            tail_end_ = static_cast<uint32_t>(chars_.size());
            if (cache_valid_ && cache_chunk_ > typing_->chunk) cache_before_ += len;
            typing_pos_ += len;
            return origin;
        }
    }
    typing_.reset();
    OpId origin;
    Pos at;
    if (pos == 0) {
        // The new id is the largest known, so it goes before everything.
        at = insert_at(Pos{0, 0, 0}, run);
        if (cache_valid_ && cache_chunk_ > 0) cache_before_ += len;
    } else {
        Pos p = locate_visible(pos - 1);
        origin = id_of(chunks_[p.chunk]->runs[p.run], p.off);
        ++p.off;
        // Stay in the origin's chunk (cursor cache stays exact), appending to its run if possible.
        at = insert_at(p, run);
    }
    typing_ = at;
    typing_pos_ = pos + len;
    return origin;
}

bool Sequence::insert_remote(OpId origin, OpId first, uint32_t len, uint32_t content) {
    cache_valid_ = false;
    typing_.reset();
    Pos p{0, 0, 0};
    if (!origin.is_null()) {
        if (!locate_id(origin, p)) return false;
        ++p.off;
    }
    normalize(p);
    while (!at_end(p)) {
        const SeqRun& r = chunks_[p.chunk]->runs[p.run];
        if (!(id_of(r, p.off) > first)) break;
        // Every later element of this run has an even larger id: skip it whole.
        ++p.run;
        p.off = 0;
        normalize(p);
    }
    insert_at(p, SeqRun{first.lamport, replica_index(first.replica), len, content, 0});
    return true;
}

void Sequence::mark_deleted(size_t ci, size_t ri, uint32_t off, uint32_t n, OpId del) {
    if (off > 0) {
        split_run(ci, ri, off);
        ++ri;
    }
    Chunk& c = *chunks_[ci];
    if (n < c.runs[ri].len) split_run(ci, ri, n);
    c.runs[ri].del = delete_index(del);
    c.runs[ri].content = 0;
    c.visible -= n;
    visible_ -= n;
    // Coalesce with neighbouring tombstones of the same delete (backspacing).
    auto joins = [&](const SeqRun& a, const SeqRun& b) {
        return !a.visible() && a.replica == b.replica && a.lamport + a.len == b.lamport &&
               same_deletion(a, b);
    };
    if (ri + 1 < c.runs.size() && joins(c.runs[ri], c.runs[ri + 1])) {
        c.runs[ri].len += c.runs[ri + 1].len;
        c.runs.erase(c.runs.begin() + static_cast<ptrdiff_t>(ri) + 1);
    }
    if (ri > 0 && joins(c.runs[ri - 1], c.runs[ri])) {
        c.runs[ri - 1].len += c.runs[ri].len;
        c.runs.erase(c.runs.begin() + static_cast<ptrdiff_t>(ri));
    }
    maybe_split_chunk(ci);
}

void Sequence::delete_local(uint64_t pos, uint64_t count,
                            const std::function<OpId(OpId, uint32_t)>& name_delete) {
    typing_.reset();
    while (count > 0) {
        const Pos p = locate_visible(pos);
        const SeqRun& r = chunks_[p.chunk]->runs[p.run];
        const auto n = static_cast<uint32_t>(std::min<uint64_t>(count, r.len - p.off));
        const OpId del = name_delete(id_of(r, p.off), n);
        mark_deleted(p.chunk, p.run, p.off, n, del);
        count -= n;
    }
}

void Sequence::delete_ids(OpId target, uint32_t count, OpId del) {
    cache_valid_ = false;
    typing_.reset();
    uint32_t replica;
    if (!find_replica(target.replica, replica)) return;
    uint64_t lamport = target.lamport;
    const uint64_t end = target.lamport + count;
    while (lamport < end) {
        Pos p;
        if (locate_id(OpId{lamport, target.replica}, p)) {
            const SeqRun& r = chunks_[p.chunk]->runs[p.run];
            const auto n = static_cast<uint32_t>(std::min<uint64_t>(end - lamport, r.len - p.off));
            if (r.visible()) mark_deleted(p.chunk, p.run, p.off, n, del);
            lamport += n;
            continue;
        }
        // Not present (never was, or compacted): jump to the next run of this replica.
        if (!index_next({replica, lamport}, lamport)) return;
    }
}

std::string Sequence::text() const {
    std::string out;
    out.reserve(visible_);
    for (const auto& c : chunks_) {
        for (const SeqRun& r : c->runs) {
            if (r.visible())
                out.append(chars_, r.content, text_advance(r.content, r.len) - r.content);
        }
    }
    return out;
}

std::vector<Value> Sequence::values() const {
    std::vector<Value> out;
    for_each_visible_value([&](const Value& v) { out.push_back(v); });
    return out;
}

void Sequence::for_each_visible_value(const std::function<void(const Value&)>& fn) const {
    for (const auto& c : chunks_) {
        for (const SeqRun& r : c->runs) {
            if (!r.visible()) continue;
            for (uint32_t k = 0; k < r.len; ++k) fn(values_[r.content + k]);
        }
    }
}

const Value* Sequence::value_at(uint64_t pos) {
    if (is_text_ || pos >= visible_) return nullptr;
    const Pos p = locate_visible(pos);
    return &values_[chunks_[p.chunk]->runs[p.run].content + p.off];
}

OpId Sequence::id_at(uint64_t pos) {
    if (pos >= visible_) return OpId{};
    const Pos p = locate_visible(pos);
    return id_of(chunks_[p.chunk]->runs[p.run], p.off);
}

uint64_t Sequence::tombstone_count() const {
    uint64_t n = 0;
    for (const auto& c : chunks_) {
        for (const SeqRun& r : c->runs) {
            if (!r.visible()) n += r.len;
        }
    }
    return n;
}

uint64_t Sequence::compact(const VersionVector& stable) {
    std::vector<SeqRun> all;
    for (const auto& c : chunks_) all.insert(all.end(), c->runs.begin(), c->runs.end());
    std::vector<SeqRun> kept;
    kept.reserve(all.size());
    uint64_t removed = 0;
    size_t i = 0;
    auto dropped = [&](const SeqRun& r) { return !r.visible() && stable.includes(del_of(r)); };
    while (i < all.size()) {
        if (!dropped(all[i])) {
            kept.push_back(all[i++]);
            continue;
        }
        size_t j = i;
        while (j < all.size() && dropped(all[j])) ++j;
        // A dropped run must be followed by a stable element (or the end), so a
        // future insert scanning from the left stops at the same place it would
        // have stopped at the dropped tombstone.
        const bool follower_stable = j == all.size() || stable.includes(id_of(all[j], 0));
        for (size_t k = i; k < j; ++k) {
            if (follower_stable)
                removed += all[k].len;
            else
                kept.push_back(all[k]);
        }
        i = j;
    }
    if (removed > 0) rebuild(std::move(kept));
    return removed;
}

void Sequence::rebuild(std::vector<SeqRun> runs) {
    // Re-pack the content arena with live elements only, and the delete table
    // with the deletes still named.
    std::string chars;
    std::vector<Value> values;
    std::vector<OpId> deletes;
    std::vector<SeqRun> merged;
    for (SeqRun r : runs) {
        if (r.visible()) {
            const auto off = static_cast<uint32_t>(is_text_ ? chars.size() : values.size());
            if (is_text_) {
                chars.append(chars_, r.content, text_advance(r.content, r.len) - r.content);
            } else {
                values.insert(values.end(), values_.begin() + r.content,
                              values_.begin() + r.content + r.len);
            }
            r.content = off;
        } else {
            const OpId del = del_of(r);
            if (deletes.empty() || deletes.back() != del) deletes.push_back(del);
            r.del = static_cast<uint32_t>(deletes.size());
            r.content = 0;
        }
        // Consecutive visible runs are contiguous in the new arena.
        if (!merged.empty() && merged.back().replica == r.replica &&
            merged.back().lamport + merged.back().len == r.lamport && merged.back().del == r.del) {
            merged.back().len += r.len;
        } else {
            merged.push_back(r);
        }
    }
    chars_ = std::move(chars);
    values_ = std::move(values);
    deletes_ = std::move(deletes);
    tail_replica_ = 0;
    tail_lamport_ = 0;
    chunks_.clear();
    index_base_ = {};
    index_added_.clear();
    index_log_ = {};
    index_stale_ = true;
    visible_ = 0;
    cache_valid_ = false;
    typing_.reset();
    for (size_t i = 0; i < merged.size() || chunks_.empty(); i += kRebuildRunsPerChunk) {
        auto c = std::make_unique<Chunk>();
        for (size_t k = i; k < std::min(merged.size(), i + kRebuildRunsPerChunk); ++k) {
            c->runs.push_back(merged[k]);
            if (merged[k].visible()) c->visible += merged[k].len;
        }
        visible_ += c->visible;
        chunks_.push_back(std::move(c));
    }
    orders_valid_ = 0;
}

void Sequence::encode_state(Writer& w,
                            const std::function<void(Writer&, const Value&)>& write_value) const {
    // Canonical form: runs merged by id alone (not by arena layout or by which
    // delete removed an element), deleted content omitted.
    std::vector<const SeqRun*> all;
    for (const auto& c : chunks_) {
        for (const SeqRun& r : c->runs) all.push_back(&r);
    }
    std::vector<std::pair<size_t, size_t>> groups;  // [first, last) into all
    for (size_t i = 0; i < all.size();) {
        size_t j = i + 1;
        while (j < all.size() && all[j]->replica == all[j - 1]->replica &&
               all[j - 1]->lamport + all[j - 1]->len == all[j]->lamport &&
               all[j]->visible() == all[i]->visible()) {
            ++j;
        }
        groups.emplace_back(i, j);
        i = j;
    }
    w.varint(groups.size());
    for (const auto& [i, j] : groups) {
        uint64_t len = 0;
        for (size_t k = i; k < j; ++k) len += all[k]->len;
        w.varint(replicas_[all[i]->replica]);
        w.varint(all[i]->lamport);
        w.varint(len);
        w.u8(all[i]->visible() ? 1 : 0);
        if (!all[i]->visible()) continue;
        if (is_text_) {
            std::string utf8;
            for (size_t k = i; k < j; ++k) {
                const uint32_t from = all[k]->content;
                utf8.append(chars_, from, text_advance(from, all[k]->len) - from);
            }
            w.bytes(utf8);
        } else {
            for (size_t k = i; k < j; ++k) {
                for (uint32_t e = 0; e < all[k]->len; ++e)
                    write_value(w, values_[all[k]->content + e]);
            }
        }
    }
}

size_t Sequence::memory_bytes() const {
    size_t n = sizeof(*this) + chars_.capacity() + values_.capacity() * sizeof(Value);
    n += replicas_.capacity() * sizeof(ReplicaId) + deletes_.capacity() * sizeof(OpId);
    n += chunks_.capacity() * sizeof(void*) + index_log_.capacity() * sizeof(IndexNote);
    for (const auto& c : chunks_) n += sizeof(Chunk) + c->runs.capacity() * sizeof(SeqRun);
    n += index_base_.capacity() * sizeof(IndexEntry);
    n += index_added_.size() * (sizeof(std::pair<const IndexKey, Chunk*>) + 32);  // node + links
    return n;
}

size_t Sequence::run_count() const {
    size_t n = 0;
    for (const auto& c : chunks_) n += c->runs.size();
    return n;
}

}  // namespace assistd::state::crdt
