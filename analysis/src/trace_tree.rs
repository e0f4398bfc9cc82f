//! One trace as a tree: depth, self time and the critical path — the chain
//! of work that determines the trace's end-to-end latency.
//!
//! The critical path walks back from the root's end: at each step the
//! child that finished last before the cursor is on the path, its own
//! critical path is followed, and the cursor moves to its start; gaps are
//! the parent's own time. Children are clipped to their parent's interval,
//! which handles clock skew (a child "longer" than its parent) and async
//! work (a consumer running after its producer ended is off the path).

/// The fields of a span the tree needs.
#[derive(Debug, Clone)]
pub struct SpanTiming {
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub start: i64,
    pub end: i64,
}

/// A stretch of time on the critical path spent in one span itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub span: usize,
    pub start: i64,
    pub end: i64,
}

/// The spans of one trace linked parent to children, so that depth, self
/// time and the critical path are computed without SQL.
pub struct TraceTree {
    pub spans: Vec<SpanTiming>,
    pub children: Vec<Vec<usize>>,
    /// Spans whose parent is absent from the trace, longest first.
    pub roots: Vec<usize>,
}

impl TraceTree {
    pub fn new(spans: Vec<SpanTiming>) -> TraceTree {
        let index: std::collections::HashMap<&str, usize> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id.as_str(), i))
            .collect();
        let mut children = vec![Vec::new(); spans.len()];
        let mut roots = Vec::new();
        for (i, span) in spans.iter().enumerate() {
            match span.parent_span_id.as_deref().and_then(|p| index.get(p)) {
                Some(&parent) if parent != i => children[parent].push(i),
                _ => roots.push(i),
            }
        }
        for list in &mut children {
            list.sort_by_key(|&c| (spans[c].start, spans[c].end));
        }
        roots.sort_by_key(|&r| {
            (
                std::cmp::Reverse(spans[r].end - spans[r].start),
                spans[r].start,
            )
        });
        TraceTree {
            spans,
            children,
            roots,
        }
    }

    /// Depth of every span (roots are 0), and a depth-first order.
    pub fn depth_first(&self) -> (Vec<usize>, Vec<usize>) {
        let mut depth = vec![0; self.spans.len()];
        let mut order = Vec::with_capacity(self.spans.len());
        let mut seen = vec![false; self.spans.len()];
        let mut roots = self.roots.clone();
        roots.sort_by_key(|&r| self.spans[r].start);
        for root in roots {
            let mut stack = vec![(root, 0)];
            while let Some((span, d)) = stack.pop() {
                if std::mem::replace(&mut seen[span], true) {
                    continue;
                }
                depth[span] = d;
                order.push(span);
                for &c in self.children[span].iter().rev() {
                    stack.push((c, d + 1));
                }
            }
        }
        (depth, order)
    }

    /// Each span's duration minus the time its children (clipped to it) cover.
    pub fn self_times(&self) -> Vec<i64> {
        (0..self.spans.len())
            .map(|i| {
                let span = &self.spans[i];
                let mut intervals: Vec<(i64, i64)> = self.children[i]
                    .iter()
                    .map(|&c| {
                        (
                            self.spans[c].start.max(span.start),
                            self.spans[c].end.min(span.end),
                        )
                    })
                    .filter(|(s, e)| s < e)
                    .collect();
                intervals.sort_unstable();
                let mut covered = 0;
                let mut current: Option<(i64, i64)> = None;
                for (s, e) in intervals {
                    match current {
                        Some((cs, ce)) if s <= ce => current = Some((cs, ce.max(e))),
                        Some((cs, ce)) => {
                            covered += ce - cs;
                            current = Some((s, e));
                        }
                        None => current = Some((s, e)),
                    }
                }
                if let Some((cs, ce)) = current {
                    covered += ce - cs;
                }
                (span.end - span.start - covered).max(0)
            })
            .collect()
    }

    /// The critical path from the main root, in time order.
    pub fn critical_path(&self) -> Vec<Segment> {
        let Some(&root) = self.roots.first() else {
            return Vec::new();
        };
        let mut segments = Vec::new();
        let (start, end) = (self.spans[root].start, self.spans[root].end);
        self.walk(root, start, end, &mut segments);
        segments.reverse();
        segments
    }

    /// Appends (latest first) the path through `root` within [lo, hi].
    /// Iterative (an explicit stack of `(span, lo, cursor)` frames), so a
    /// trace tens of thousands of levels deep cannot overflow the stack.
    fn walk(&self, root: usize, lo: i64, hi: i64, out: &mut Vec<Segment>) {
        let mut stack = vec![(root, lo, hi)];
        while let Some((span, lo, cursor)) = stack.pop() {
            // The child that finished last before the cursor.
            let next = self.children[span]
                .iter()
                .map(|&c| {
                    (
                        c,
                        self.spans[c].start.max(lo),
                        self.spans[c].end.min(cursor),
                    )
                })
                .filter(|(_, s, e)| s < e)
                .max_by_key(|(c, _, e)| (*e, std::cmp::Reverse(*c)));
            let Some((child, child_start, child_end)) = next else {
                if lo < cursor {
                    out.push(Segment {
                        span,
                        start: lo,
                        end: cursor,
                    });
                }
                continue;
            };
            if child_end < cursor {
                out.push(Segment {
                    span,
                    start: child_end,
                    end: cursor,
                });
            }
            // The child's subtree first, then this span before the child.
            stack.push((span, lo, child_start));
            stack.push((child, child_start, child_end));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, start: i64, end: i64) -> SpanTiming {
        SpanTiming {
            span_id: id.into(),
            parent_span_id: parent.map(String::from),
            start,
            end,
        }
    }

    /// Asserts the critical path through `spans` (id, parent, start, end)
    /// is `expected` (id, start, end), in time order.
    fn assert_path(spans: &[(&str, Option<&str>, i64, i64)], expected: &[(&str, i64, i64)]) {
        let tree = TraceTree::new(
            spans
                .iter()
                .map(|&(id, p, s, e)| span(id, p, s, e))
                .collect(),
        );
        let path: Vec<(&str, i64, i64)> = tree
            .critical_path()
            .into_iter()
            .map(|s| (tree.spans[s.span].span_id.as_str(), s.start, s.end))
            .collect();
        assert_eq!(path, expected);
    }

    #[test]
    fn a_chain_sixty_thousand_deep_does_not_overflow_the_stack() {
        let n = 60_000;
        let spans: Vec<SpanTiming> = (0..n)
            .map(|i| {
                let parent = (i > 0).then(|| format!("s{}", i - 1));
                span(
                    &format!("s{i}"),
                    parent.as_deref(),
                    i as i64,
                    2 * n as i64 - i as i64,
                )
            })
            .collect();
        let tree = TraceTree::new(spans);
        let path = tree.critical_path();
        // Each span contributes its head and tail around its child; the leaf itself.
        assert_eq!(path.len(), 2 * n - 1);
        assert_eq!(path.first().map(|s| s.span), Some(0));
        let (depth, order) = tree.depth_first();
        assert_eq!(depth[n - 1], n - 1);
        assert_eq!(order.len(), n);
        assert_eq!(tree.self_times()[n - 1], 2);
    }

    #[test]
    fn sequential_calls_are_all_on_the_path() {
        assert_path(
            &[
                ("root", None, 0, 100),
                ("a", Some("root"), 10, 40),
                ("b", Some("root"), 50, 90),
            ],
            &[
                ("root", 0, 10),
                ("a", 10, 40),
                ("root", 40, 50),
                ("b", 50, 90),
                ("root", 90, 100),
            ],
        );
    }

    #[test]
    fn parallel_fan_out_follows_the_slowest_branch() {
        assert_path(
            &[
                ("root", None, 0, 100),
                ("fast", Some("root"), 10, 60),
                ("slow", Some("root"), 10, 90),
                ("db", Some("slow"), 20, 80),
            ],
            &[
                ("root", 0, 10),
                ("slow", 10, 20),
                ("db", 20, 80),
                ("slow", 80, 90),
                ("root", 90, 100),
            ],
        );
    }

    #[test]
    fn async_consumers_after_the_producer_are_off_the_path() {
        assert_path(
            &[
                ("root", None, 0, 30),
                ("produce", Some("root"), 5, 10),
                ("consume", Some("produce"), 40, 90),
            ],
            &[("root", 0, 5), ("produce", 5, 10), ("root", 10, 30)],
        );
    }

    #[test]
    fn skewed_children_are_clipped_to_their_parent() {
        assert_path(
            &[("root", None, 0, 100), ("skewed", Some("root"), -5, 120)],
            &[("skewed", 0, 100)],
        );
        let tree = TraceTree::new(vec![
            span("root", None, 0, 100),
            span("skewed", Some("root"), -5, 120),
        ]);
        assert_eq!(tree.self_times(), vec![0, 125]);
    }

    #[test]
    fn depth_self_time_and_missing_parents() {
        let tree = TraceTree::new(vec![
            span("root", None, 0, 100),
            span("a", Some("root"), 10, 40),
            span("b", Some("root"), 30, 60),
            span("orphan", Some("gone"), 0, 5),
        ]);
        assert_eq!(tree.self_times(), vec![50, 30, 30, 5]);
        let (depth, order) = tree.depth_first();
        assert_eq!(depth, vec![0, 1, 1, 0]);
        assert_eq!(order.len(), 4);
        assert_eq!(tree.roots[0], 0, "the longest root is the main one");
    }
}
