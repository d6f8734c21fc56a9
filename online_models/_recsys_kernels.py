"""numba kernels of :class:`online_models.recsys.HybridRecommender` (``hybrid-2``).

A numpy call on a small array costs about 2 µs of interpreter overhead, and ranking needs
about 75 of them; here the whole ranking is one compiled call (two with catalog facts) over
the model's plain numpy arrays, and extending a session is one call. Compiled code is cached
beside this module (``cache=True``): the first call in a fresh process loads it (or compiles
it once, a few seconds, if the cache is missing or stale); :func:`warm_up` does that ahead.

Variable-length per-item lists (the inverted index item -> sessions and the co-visitation
rows item -> next items) live in *arenas*: one pool array per field, and per item slot a row
``index[slot] = (start, length, capacity)`` of its block in the pool. A full block moves to a
new one of twice the capacity at the pool's end (``meta[0]``, the end; ``meta[1]``, the
capacity of abandoned blocks); the Python side compacts or grows the pool between calls when
the kernels report that the free tail is shorter than ``headroom`` (one call's worst case).

>>> index = np.zeros((3, 3), dtype=np.int64); meta = np.zeros(2, dtype=np.int64)
>>> pool = np.zeros(64, dtype=np.int32)
>>> for session in (5, 6, 7, 8, 9):
...     posting_append(pool, index, meta, 1, session, 100)
>>> pool[index[1, 0]:index[1, 0] + index[1, 1]].tolist(), index[1].tolist(), meta.tolist()
([5, 6, 7, 8, 9], [4, 5, 8], [12, 4])
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["COMPONENTS_N", "arena_compact", "content_profile", "extend_session",
           "posting_append", "rank", "release_session", "warm_up"]

COMPONENTS_N = 8
_NONE = 8   # reason digit: no reason
_EMPTY_I = np.empty(0, dtype=np.int64)
_EMPTY_F = np.empty(0, dtype=np.float64)


# ---------------------------------------------------------------------------- arenas


@numba.njit(cache=True)
def _move_block(index, meta, slot, capacity, pools_int, pools_float):  # pragma: no cover
    """Give ``slot`` a new block of ``capacity`` at the pool's end, copying its entries."""
    start, length, old = index[slot, 0], index[slot, 1], index[slot, 2]
    new = meta[0]
    for j in range(length):
        pools_int[new + j] = pools_int[start + j]
        pools_float[new + j] = pools_float[start + j]
    meta[0] = new + capacity
    meta[1] += old
    index[slot, 0] = new
    index[slot, 2] = capacity
    return new


@numba.njit(cache=True)
def posting_append(pool, index, meta, slot, session, limit):  # pragma: no cover
    """Append ``session`` to ``slot``'s postings (newest last); at ``2 * limit`` entries the
    oldest are dropped first, so that ``limit`` remain after the append."""
    start, length, capacity = index[slot, 0], index[slot, 1], index[slot, 2]
    if length >= 2 * limit:
        keep = max(limit - 1, 0)
        drop = length - keep
        for j in range(keep):
            pool[start + j] = pool[start + drop + j]
        length = keep
    if length == capacity:
        capacity = min(max(4, 2 * capacity), max(2 * limit, 1))
        new = meta[0]
        for j in range(length):
            pool[new + j] = pool[start + j]
        meta[0] = new + capacity
        meta[1] += index[slot, 2]
        index[slot, 0] = start = new
        index[slot, 2] = capacity
    pool[start + length] = session
    index[slot, 1] = length + 1


@numba.njit(cache=True)
def _posting_remove(pool, index, slot, session):  # pragma: no cover
    """Remove the first occurrence of ``session`` from ``slot``'s postings (if any)."""
    start, length = index[slot, 0], index[slot, 1]
    for j in range(length):
        if pool[start + j] == session:
            for m in range(start + j, start + length - 1):
                pool[m] = pool[m + 1]
            index[slot, 1] = length - 1
            return


@numba.njit(cache=True)
def _covisit_add(targets, weights, index, meta, source, target, value, cap):  # pragma: no cover
    """Add ``value`` to ``source``'s co-visitation weight of ``target``; past
    ``cap + cap // 2`` targets the row keeps its ``cap`` heaviest (ties: older first), in
    their order."""
    start, length, capacity = index[source, 0], index[source, 1], index[source, 2]
    for j in range(start, start + length):
        if targets[j] == target:
            weights[j] += value
            return
    if length == capacity:
        start = _move_block(index, meta, source, min(max(4, 2 * capacity), cap + cap // 2 + 1),
                            targets, weights)
    targets[start + length] = target
    weights[start + length] = value
    length += 1
    if length > cap + cap // 2:
        order = np.argsort(-weights[start:start + length], kind="mergesort")
        kept = np.sort(order[:cap])
        for n in range(len(kept)):
            targets[start + n] = targets[start + kept[n]]
            weights[start + n] = weights[start + kept[n]]
        length = len(kept)
    index[source, 1] = length


@numba.njit(cache=True)
def extend_session(session_items, number, length, slot, boost, window, covisit_cap,
                   post_pool, post_index, post_meta, postings_limit, post_headroom,
                   cov_targets, cov_weights, cov_index, cov_meta, cov_totals,
                   cov_headroom):  # pragma: no cover
    """Append item ``slot`` to session row ``number`` (``length`` items; the caller has
    checked it is not a repeat of the last one): co-visitation from the last ``window``
    items (``boost / distance``), the inverted index, and the row (oldest item dropped when
    full). Returns (new length, whether an arena's free tail is below its headroom)."""
    row = session_items[number]
    for distance in range(1, min(window, length) + 1):
        source = row[length - distance]
        if source == slot or source == 0:   # 0: an evicted item's place
            continue
        add = boost / distance
        _covisit_add(cov_targets, cov_weights, cov_index, cov_meta, source, slot, add,
                     covisit_cap)
        cov_totals[source] += add
    present = False
    for j in range(length):
        if row[j] == slot:
            present = True
            break
    if not present:
        posting_append(post_pool, post_index, post_meta, slot, number, postings_limit)
    width = row.shape[0]
    if length < width:
        row[length] = slot
        length += 1
    else:
        dropped = row[0]
        for j in range(width - 1):
            row[j] = row[j + 1]
        row[width - 1] = slot
        kept = dropped == slot
        for j in range(width - 1):
            if row[j] == dropped:
                kept = True
                break
        if not kept:   # postings list exactly the sessions holding an item
            _posting_remove(post_pool, post_index, dropped, number)
    low = (post_meta[0] + post_headroom > post_pool.shape[0]
           or cov_meta[0] + cov_headroom > cov_targets.shape[0])
    return length, low


@numba.njit(cache=True)
def release_session(session_items, number, length, post_pool, post_index):  # pragma: no cover
    """Remove session row ``number`` from its items' postings and clear the row."""
    row = session_items[number]
    for j in range(length):
        seen = False
        for m in range(j):
            if row[m] == row[j]:
                seen = True
                break
        if not seen:
            _posting_remove(post_pool, post_index, row[j], number)
    row[:] = 0


@numba.njit(cache=True)
def arena_compact(index, meta, size, pool_a, pool_b):  # pragma: no cover
    """Copy every live block, in slot order, into new pools of ``size``; returns them
    (``pool_b`` may be empty: an arena of one pool)."""
    new_a = np.zeros(size, dtype=pool_a.dtype)
    new_b = np.zeros(size if len(pool_b) else 0, dtype=pool_b.dtype)   # empty: no second pool
    end = 0
    for slot in range(index.shape[0]):
        capacity = index[slot, 2]
        if capacity == 0:
            continue
        start, length = index[slot, 0], index[slot, 1]
        for j in range(length):
            new_a[end + j] = pool_a[start + j]
        if len(pool_b):
            for j in range(length):
                new_b[end + j] = pool_b[start + j]
        index[slot, 0] = end
        end += capacity
    meta[0] = end
    meta[1] = 0
    return new_a, new_b


# ---------------------------------------------------------------------------- ranking


@numba.njit(cache=True)
def _prefix(session_items, number, length):  # pragma: no cover
    """The session's item slots, oldest first, without evicted places (0)."""
    out = np.empty(length, dtype=np.int64)
    n = 0
    if number >= 0:
        for j in range(length):
            slot = session_items[number, j]
            if slot != 0:
                out[n] = slot
                n += 1
    return out[:n]


@numba.njit(cache=True)
def content_profile(session_items, number, length, knn_prefix, position_decay, category,
                    brand, n_categories, n_brands, affinity_codes,
                    affinity_shares):  # pragma: no cover
    """(category shares, brand shares, the three preferred categories) of a session and the
    caller's affinity shares; empty share arrays when there is no profile."""
    prefix = _prefix(session_items, number, length)
    categories = np.zeros(n_categories)
    brands = np.zeros(n_brands)
    listed = np.zeros(n_categories, dtype=np.bool_)
    # insertion order of the categories (ties of the top three keep it)
    order = np.empty(min(len(prefix), knn_prefix) + len(affinity_codes), dtype=np.int64)
    n_order = 0
    any_brand = False
    if len(prefix):
        weight = 1.0
        for j in range(len(prefix) - 1, max(len(prefix) - knn_prefix, 0) - 1, -1):
            slot = prefix[j]
            c, b = category[slot], brand[slot]
            if c >= 0:
                if not listed[c]:
                    listed[c] = True
                    order[n_order] = c
                    n_order += 1
                categories[c] += weight
            if b >= 0:
                any_brand = True
                brands[b] += weight
            weight *= position_decay
        _share(categories, order[:n_order])
    for j in range(len(affinity_codes)):
        c = affinity_codes[j]
        if not listed[c]:
            listed[c] = True
            order[n_order] = c
            n_order += 1
        categories[c] += affinity_shares[j]
    if n_order == 0 and not any_brand:
        return _EMPTY_F, _EMPTY_F, _EMPTY_I
    _share(categories, order[:n_order])
    total = 0.0
    for b in range(n_brands):
        total += brands[b]
    if total > 0:
        brands /= total
    top = np.empty(min(3, n_order), dtype=np.int64)
    taken = np.zeros(n_order, dtype=np.bool_)
    for t in range(len(top)):
        best = -1
        for j in range(n_order):
            if not taken[j] and (best < 0 or categories[order[j]] > categories[order[best]]):
                best = j
        taken[best] = True
        top[t] = order[best]
    return categories, brands, top


@numba.njit(cache=True)
def _share(values, keys):  # pragma: no cover
    total = 0.0
    for key in keys:
        total += values[key]
    if total > 0:
        for key in keys:
            values[key] /= total


@numba.njit(cache=True)
def _put(mark, cand, matrix, n, slot, component, value):  # pragma: no cover
    """Add ``value`` to (``slot``, ``component``); returns the new candidate count."""
    row = mark[slot]
    if row < n and cand[row] == slot:
        matrix[row, component] += value
        return n
    mark[slot] = n
    cand[n] = slot
    matrix[n, :] = 0.0
    matrix[n, component] = value
    return n + 1


@numba.njit(cache=True)
def rank(session_items, number, length, weights, k,
         knn_prefix, position_decay, sample_per_item, k_neighbours, vote_table,
         post_pool, post_index, session_weight, session_mark,
         covisit_prefix, cov_targets, cov_weights, cov_index, cov_totals,
         recent_decay, room, extra, trending_top, popular_top, banned,
         item_mark, scratch_cand, scratch_matrix,
         trending, popular, trending_best, popular_best, in_stock,
         category, brand, category_share, brand_share,
         mf_p, mf_bias, mf_b, mf_q, mf_known, mf_mean):  # pragma: no cover
    """The best ``k`` allowed candidates: (item slots, scores rounded to 1e-6, reason codes
    ``81 a + 9 b + c``), best first (ties by slot); empty when nothing can be returned.

    The same computation as the module docstring of :mod:`online_models.recsys` describes:
    every component adds (slot, value) entries summed per (candidate, component); session
    row ``number`` < 0 means no session; empty ``category_share`` / ``brand_share`` no content
    profile; empty ``mf_p`` no MF user.
    """
    prefix = _prefix(session_items, number, length)
    n_prefix = len(prefix)
    width = session_items.shape[1]
    # an upper bound of the entries (and so of the candidates)
    bound = len(room) + len(extra) + len(trending_top) + len(popular_top) + n_prefix
    if n_prefix and weights[0] > 0:
        bound += k_neighbours * width
    if n_prefix and weights[1] > 0:
        for j in range(n_prefix - 1, max(n_prefix - covisit_prefix, 0) - 1, -1):
            bound += cov_index[prefix[j], 1]
    if bound <= scratch_cand.shape[0]:
        cand, matrix = scratch_cand, scratch_matrix
    else:
        cand = np.empty(bound, dtype=np.int64)
        matrix = np.empty((bound, COMPONENTS_N))
    n = 0

    if n_prefix and weights[0] > 0:   # session-kNN
        first = max(n_prefix - knn_prefix, 0)
        cur_slot = np.empty(n_prefix - first, dtype=np.int64)
        cur_weight = np.empty(n_prefix - first)
        n_cur = 0
        weight = 1.0
        for j in range(n_prefix - 1, first - 1, -1):   # most recent first; it keeps its weight
            slot = prefix[j]
            seen = False
            for m in range(n_cur):
                if cur_slot[m] == slot:
                    seen = True
                    break
            if not seen:
                cur_slot[n_cur] = slot
                cur_weight[n_cur] = weight
                n_cur += 1
            weight *= position_decay
        total = 0
        for m in range(n_cur):
            total += min(post_index[cur_slot[m], 1],
                         max(8, int(sample_per_item * cur_weight[m])))
        neighbours = np.empty(total, dtype=np.int64)
        similarity = np.empty(total)
        anchor = np.empty(total, dtype=np.int64)
        n_nb = 0
        # oldest current item first: a neighbour is aligned on the most recent item it shares
        for m in range(n_cur - 1, -1, -1):
            slot, w = cur_slot[m], cur_weight[m]
            start, count = post_index[slot, 0], post_index[slot, 1]
            read = min(count, max(8, int(sample_per_item * w)))
            for j in range(start + count - read, start + count):
                s = post_pool[j]
                if s == number:   # never its own neighbour
                    continue
                at = session_mark[s]
                if at < n_nb and neighbours[at] == s:
                    similarity[at] += w
                    anchor[at] = slot
                else:
                    session_mark[s] = n_nb
                    neighbours[n_nb] = s
                    similarity[n_nb] = w
                    anchor[n_nb] = slot
                    n_nb += 1
        for j in range(n_nb):
            similarity[j] *= session_weight[neighbours[j]]
        chosen = np.empty(min(n_nb, k_neighbours), dtype=np.int64)
        if n_nb > k_neighbours:
            threshold = np.partition(similarity[:n_nb], n_nb - k_neighbours)[n_nb - k_neighbours]
            n_ch = 0
            for j in range(n_nb):
                if similarity[j] > threshold:
                    chosen[n_ch] = j
                    n_ch += 1
            for j in range(n_nb):
                if n_ch == k_neighbours:
                    break
                if similarity[j] == threshold:
                    chosen[n_ch] = j
                    n_ch += 1
        else:
            for j in range(n_nb):
                chosen[j] = j
        for j in chosen:
            sim = similarity[j]
            s = neighbours[j]
            position = 0   # the shared item's column (0 if trimmed off a long session)
            for c in range(width):
                if session_items[s, c] == anchor[j]:
                    position = c
                    break
            for c in range(width):
                vote = vote_table[position, c] * sim
                if vote > 0:   # inside the window (padding slot 0: never allowed)
                    n = _put(item_mark, cand, matrix, n, session_items[s, c], 0, vote)

    if n_prefix and weights[1] > 0:   # co-visitation shares of the last items
        weight = 1.0
        for j in range(n_prefix - 1, max(n_prefix - covisit_prefix, 0) - 1, -1):
            slot = prefix[j]
            start, count = cov_index[slot, 0], cov_index[slot, 1]
            if count and cov_totals[slot] > 0:
                scale = weight / cov_totals[slot]
                for m in range(start, start + count):
                    n = _put(item_mark, cand, matrix, n, cov_targets[m], 1,
                             cov_weights[m] * scale)
            weight *= position_decay

    if n_prefix and weights[2] > 0:   # the session's own items, the last one first
        weight = 1.0
        for j in range(n_prefix - 1, -1, -1):
            slot = prefix[j]
            seen = False
            for m in range(j + 1, n_prefix):
                if prefix[m] == slot:
                    seen = True
                    break
            if not seen:
                n = _put(item_mark, cand, matrix, n, slot, 2, weight)
            weight *= recent_decay

    for slot in room:
        n = _put(item_mark, cand, matrix, n, slot, 7, 1.0)
    for slot in extra:
        n = _put(item_mark, cand, matrix, n, slot, 3, 0.0)
    for slot in trending_top:
        n = _put(item_mark, cand, matrix, n, slot, 5, 0.0)
    for slot in popular_top:
        n = _put(item_mark, cand, matrix, n, slot, 5, 0.0)
    if n == 0:
        return _EMPTY_I, _EMPTY_F, _EMPTY_I

    allowed = np.empty(n, dtype=np.bool_)
    for r in range(n):
        allowed[r] = in_stock[cand[r]]
    for slot in banned:
        r = item_mark[slot]
        if r < n and cand[r] == slot:
            allowed[r] = False
    # kNN votes and co-visitation shares are divided by the best candidate's, popularity by
    # the best item's
    w = weights.copy()
    for column in range(2):
        peak = 0.0
        for r in range(n):
            peak = max(peak, matrix[r, column])
        if peak > 0:
            w[column] /= peak
    w[4] = w[4] / trending_best if trending_best > 0 else 0.0
    w[5] = w[5] / popular_best if popular_best > 0 else 0.0
    for r in range(n):
        matrix[r, 4] = trending[cand[r]]
        matrix[r, 5] = popular[cand[r]]
    if len(category_share) or len(brand_share):   # content: divided by the best allowed
        best = 0.0
        for r in range(n):
            raw = 0.0
            c, b = category[cand[r]], brand[cand[r]]
            if c >= 0 and len(category_share):
                raw += category_share[c]
            if b >= 0 and len(brand_share):
                raw += 0.5 * brand_share[b]
            raw = raw if allowed[r] else 0.0
            matrix[r, 3] = raw
            best = max(best, raw)
        if best > 0:
            for r in range(n):
                matrix[r, 3] /= best
    if len(mf_p):   # predicted lift over the mean, in [0, 1]; 0 for items never learned
        scale = 1.0 / (1.0 - mf_mean) if mf_mean < 1.0 else 1.0
        for r in range(n):
            slot = cand[r]
            lift = 0.0
            if mf_known[slot]:
                dot = 0.0
                for f in range(len(mf_p)):
                    dot += mf_q[slot, f] * mf_p[f]
                lift = min(max((mf_bias + mf_b[slot] + dot) * scale, 0.0), 1.0)
            matrix[r, 6] = lift

    # the best k by (score desc, slot asc): insertion into a short sorted list
    top_row = np.empty(k, dtype=np.int64)
    top_score = np.empty(k)
    n_top = 0
    for r in range(n):
        if not allowed[r]:
            continue
        score = 0.0
        for c in range(COMPONENTS_N):
            score += matrix[r, c] * w[c]
        slot = cand[r]
        if n_top == k and not (score > top_score[k - 1]
                               or (score == top_score[k - 1] and slot < cand[top_row[k - 1]])):
            continue
        at = min(n_top, k - 1)
        while at > 0 and (score > top_score[at - 1]
                          or (score == top_score[at - 1] and slot < cand[top_row[at - 1]])):
            top_row[at] = top_row[at - 1]
            top_score[at] = top_score[at - 1]
            at -= 1
        top_row[at] = r
        top_score[at] = score
        n_top = min(n_top + 1, k)

    slots = np.empty(n_top, dtype=np.int64)
    scores = np.empty(n_top)
    codes = np.empty(n_top, dtype=np.int64)
    contribution = np.empty(COMPONENTS_N)
    for t in range(n_top):
        r = top_row[t]
        slots[t] = cand[r]
        score = top_score[t]
        scores[t] = np.rint(score * 1e6) / 1e6
        for c in range(COMPONENTS_N):
            contribution[c] = matrix[r, c] * w[c]
        # reasons: the three largest contributions (ties: component order) over a tenth
        # of the score, as base-9 digits (8 = none)
        code = 0
        used = 0   # bit set of the components taken
        for _ in range(3):
            best = -1
            for c in range(COMPONENTS_N):
                if not (used >> c) & 1 and (best < 0 or contribution[c] > contribution[best]):
                    best = c
            used |= 1 << best
            code = 9 * code + (best if contribution[best] > 0.1 * score else _NONE)
        codes[t] = code
    return slots, scores, codes


def warm_up() -> None:
    """Load (or compile) every kernel for the argument types the recommender passes."""
    from online_models.recsys import HybridRecommender

    model = HybridRecommender(seed=0)
    model.set_item("b", category="c", brand="x")
    for n in range(3):
        model.learn_one({"session_id": f"s{n}", "item_id": "a", "ts": n, "user_id": "u"})
        model.learn_one({"session_id": f"s{n}", "item_id": "b", "ts": n, "kind": "purchase",
                         "user_id": "u"})
    model.rank({"session_id": "s0", "user_id": "u", "room_items": ["a", "zz"],
                "exclude": ["b"], "affinity": {"c": 1.0}})
    model.rank({"session_id": "s1"})
    model._compact_arenas()
