// Log-linear latency histogram (the HdrHistogram / SPDK histogram_data idea):
// values below 2^kSubBits land in exact buckets, larger ones in 2^kSubBits
// linear sub-buckets per power of two, so the relative error stays below
// 2^-kSubBits (1.6 %). Fixed storage, no allocation per sample. Owned by the
// generator thread.
#ifndef VHOSTD_PERF_HISTOGRAM_H_
#define VHOSTD_PERF_HISTOGRAM_H_

#include <cstdint>
#include <cstring>

namespace vhostd_perf {

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 6;
  static constexpr uint64_t kSub = uint64_t(1) << kSubBits;
  static constexpr int kBuckets = (64 - kSubBits + 1) * int(kSub);

  LatencyHistogram() { Reset(); }

  void Reset() {
    std::memset(counts_, 0, sizeof counts_);
    count_ = 0;
    sum_ = 0;
    min_ = UINT64_MAX;
    max_ = 0;
  }

  void Add(uint64_t value) {
    counts_[Index(value)]++;
    count_++;
    sum_ += value;
    if (value < min_) min_ = value;
    if (value > max_) max_ = value;
  }

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : double(sum_) / double(count_); }

  // Value at quantile q (0 < q <= 1): the middle of the bucket holding the
  // ceil(q * count)-th smallest sample, clamped to [min, max].
  double Quantile(double q) const {
    if (count_ == 0) return 0.0;
    uint64_t rank = uint64_t(q * double(count_));
    if (double(rank) < q * double(count_)) rank++;
    if (rank < 1) rank = 1;
    if (rank > count_) rank = count_;
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; i++) {
      seen += counts_[i];
      if (seen >= rank) {
        double mid = double(LowerBound(i)) + double(Width(i) - 1) / 2.0;
        if (mid < double(min_)) mid = double(min_);
        if (mid > double(max_)) mid = double(max_);
        return mid;
      }
    }
    return double(max_);
  }

  static int Index(uint64_t v) {
    if (v < kSub) return int(v);
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - kSubBits;
    return (shift + 1) * int(kSub) + int((v >> shift) - kSub);
  }

  static uint64_t LowerBound(int index) {
    uint64_t group = uint64_t(index) >> kSubBits;
    if (group == 0) return uint64_t(index);
    uint64_t shift = group - 1;
    return ((uint64_t(index) & (kSub - 1)) + kSub) << shift;
  }

  static uint64_t Width(int index) {
    uint64_t group = uint64_t(index) >> kSubBits;
    return group == 0 ? 1 : uint64_t(1) << (group - 1);
  }

 private:
  uint64_t counts_[kBuckets];
  uint64_t count_;
  uint64_t sum_;
  uint64_t min_;
  uint64_t max_;
};

}  // namespace vhostd_perf

#endif  // VHOSTD_PERF_HISTOGRAM_H_
