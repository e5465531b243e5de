//! Building the index: one trie per subject from its sorted rules, laid out as one region of
//! the arena.

use super::super::{Effect, Rule, RuleOrigin, SubjectState};
use super::{mask_bit, pad4, Node, EDGE_BYTES, HEADER_BYTES, NODE_BYTES, NONE};

fn origin_mask(o: &RuleOrigin) -> u8 {
    o.actions
        .iter()
        .flat_map(|a| o.qos.iter().map(move |q| mask_bit(a, q)))
        .fold(0, |m, b| m | b)
}

/// A pattern as (the levels before a final `#`, whether it ends in `#`).
fn body(pattern: &str) -> (Option<&str>, bool) {
    match pattern.strip_suffix('#') {
        Some(b) => (b.strip_suffix('/'), true),
        None => (Some(pattern), false),
    }
}

/// Orders patterns by their body level by level (`/` sorts before every other byte), then exact
/// before `/#`: patterns sharing their first k levels are adjacent, and a node's exact rules are
/// immediately followed by its `/#` rules.
fn level_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn bytes(b: Option<&str>) -> impl Iterator<Item = u8> + '_ {
        b.unwrap_or("")
            .bytes()
            .map(|c| if c == b'/' { 0 } else { c })
    }
    let ((ab, ah), (bb, bh)) = (body(a), body(b));
    // A missing body (`#` alone) is the root: before everything.
    ab.is_some()
        .cmp(&bb.is_some())
        .then_with(|| bytes(ab).cmp(bytes(bb)))
        .then(ah.cmp(&bh))
}

/// Trie construction scratch, reused for every subject; [`Build::emit`] lays a finished trie
/// out as one region.
#[derive(Default)]
pub(super) struct Build<'a> {
    nodes: Vec<Node>,
    parents: Vec<u32>,
    /// (parent, label, child), in creation order.
    edges: Vec<(u32, &'a str, u32)>,
    leaves: Vec<u32>,
    order: Vec<u32>,
    counts: Vec<u32>,
    grouped: Vec<(&'a str, u32)>,
    preorder: Vec<u32>,
    stack: Vec<u32>,
    offsets: Vec<usize>,
}

impl<'a> Build<'a> {
    fn node(&mut self, parent: u32) -> u32 {
        self.nodes.push(Node::new());
        self.parents.push(parent);
        (self.nodes.len() - 1) as u32
    }

    /// Builds one trie from rules, with local indices (root = 0).
    pub(super) fn trie(&mut self, rules: &'a [Rule], origins: &[RuleOrigin]) {
        self.nodes.clear();
        self.parents.clear();
        self.edges.clear();
        self.leaves.clear();
        self.order.clear();
        self.order.extend(0..rules.len() as u32);
        self.order.sort_by(|a, b| {
            let (a, b) = (&rules[*a as usize], &rules[*b as usize]);
            level_order(&a.pattern, &b.pattern).then(a.origin.cmp(&b.origin))
        });
        let root = self.node(NONE);
        // The path of the previous pattern: (label, node).
        let mut path: Vec<(&str, u32)> = Vec::new();
        for k in 0..self.order.len() {
            let rule = &rules[self.order[k] as usize];
            let (body, hash) = body(&rule.pattern);
            let mut depth = 0;
            let mut at = root;
            for level in body.into_iter().flat_map(|b| b.split('/')) {
                match path.get(depth) {
                    Some((l, n)) if *l == level => at = *n,
                    _ => {
                        path.truncate(depth);
                        let child = self.node(at);
                        if level == "+" {
                            self.nodes[at as usize].plus = child;
                        } else {
                            self.edges.push((at, level, child));
                        }
                        path.push((level, child));
                        at = child;
                    }
                }
                depth += 1;
            }
            path.truncate(depth);
            let leaf = self.leaves.len() as u32;
            let node = &mut self.nodes[at as usize];
            if node.n_exact + node.n_hash == 0 {
                node.leaves = leaf;
            }
            // Sorted level by level, a node's exact rules come right before its `/#` rules.
            debug_assert_eq!(node.leaves + node.n_exact + node.n_hash, leaf);
            if hash {
                node.n_hash += 1;
            } else {
                node.n_exact += 1;
            }
            let o = &origins[rule.origin as usize];
            match o.effect {
                Effect::Allow => node.allow |= origin_mask(o),
                Effect::Deny => node.deny |= origin_mask(o),
            }
            self.leaves.push(rule.origin);
        }
        // Subtree masks: children are created after their parents.
        for i in (1..self.nodes.len()).rev() {
            let p = self.parents[i] as usize;
            let (allow, deny) = (self.nodes[i].allow, self.nodes[i].deny);
            self.nodes[p].allow |= allow;
            self.nodes[p].deny |= deny;
        }
        // Group edges by parent (counting sort; stable, so labels stay sorted per parent).
        self.counts.clear();
        self.counts.resize(self.nodes.len() + 1, 0);
        for e in &self.edges {
            self.counts[e.0 as usize + 1] += 1;
        }
        for i in 1..self.counts.len() {
            self.counts[i] += self.counts[i - 1];
        }
        for (n, node) in self.nodes.iter_mut().enumerate() {
            node.edges = self.counts[n];
            node.n_edges = self.counts[n + 1] - self.counts[n];
        }
        self.grouped.clear();
        self.grouped.resize(self.edges.len(), ("", 0));
        for &(parent, label, child) in &self.edges {
            let slot = &mut self.counts[parent as usize];
            self.grouped[*slot as usize] = (label, child);
            *slot += 1;
        }
    }

    /// Appends a region to the arena: the header, then (if `with_trie`) the trie just built,
    /// node by node in pre-order, each node followed by its edges, leaves and edge labels. A
    /// walk from the root therefore moves forward through a few adjacent cache lines.
    pub(super) fn emit(
        &mut self,
        arena: &mut Vec<u8>,
        name: &str,
        state: SubjectState,
        with_trie: bool,
    ) -> u32 {
        let base = arena.len();
        let root_at = base + HEADER_BYTES + pad4(name.len());
        let put = |arena: &mut Vec<u8>, v: u32| arena.extend_from_slice(&v.to_le_bytes());
        let abs = |v: usize| u32::try_from(v).expect("ACL index larger than 4 GiB");
        put(
            arena,
            match state {
                SubjectState::Active => 0,
                SubjectState::Suspended => 1,
                SubjectState::Revoked => 2,
            },
        );
        put(arena, if with_trie { abs(root_at) } else { NONE });
        put(arena, abs(name.len()));
        arena.extend_from_slice(name.as_bytes());
        arena.resize(root_at, 0);
        if !with_trie {
            return abs(base);
        }
        // Pre-order: a node, its literal children's subtrees in label order, then its `+` child.
        self.preorder.clear();
        self.stack.clear();
        self.stack.push(0);
        while let Some(n) = self.stack.pop() {
            self.preorder.push(n);
            let node = &self.nodes[n as usize];
            if node.plus != NONE {
                self.stack.push(node.plus);
            }
            let edges = node.edges as usize..(node.edges + node.n_edges) as usize;
            self.stack
                .extend(self.grouped[edges].iter().rev().map(|(_, child)| *child));
        }
        // Chunk offsets.
        self.offsets.clear();
        self.offsets.resize(self.nodes.len(), 0);
        let mut at = root_at;
        for &n in &self.preorder {
            let node = &self.nodes[n as usize];
            self.offsets[n as usize] = at;
            let edges = node.edges as usize..(node.edges + node.n_edges) as usize;
            let labels: usize = self.grouped[edges].iter().map(|(l, _)| l.len()).sum();
            at += NODE_BYTES
                + node.n_edges as usize * EDGE_BYTES
                + (node.n_exact + node.n_hash) as usize * 4
                + pad4(labels);
        }
        for &n in &self.preorder {
            let node = self.nodes[n as usize];
            let chunk = self.offsets[n as usize];
            debug_assert_eq!(arena.len(), chunk);
            put(arena, node.n_edges);
            put(
                arena,
                if node.plus == NONE {
                    NONE
                } else {
                    abs(self.offsets[node.plus as usize])
                },
            );
            put(arena, node.n_exact);
            put(arena, node.n_hash);
            arena.extend_from_slice(&[node.allow, node.deny, 0, 0]);
            let edges = &self.grouped[node.edges as usize..(node.edges + node.n_edges) as usize];
            let leaves = node.leaves as usize..(node.leaves + node.n_exact + node.n_hash) as usize;
            let mut label_at = chunk + NODE_BYTES + edges.len() * EDGE_BYTES + leaves.len() * 4;
            for (label, child) in edges {
                put(arena, abs(label_at));
                put(arena, abs(label.len()));
                put(arena, abs(self.offsets[*child as usize]));
                label_at += label.len();
            }
            for l in &self.leaves[leaves] {
                put(arena, *l);
            }
            for (label, _) in edges {
                arena.extend_from_slice(label.as_bytes());
            }
            arena.resize(pad4(arena.len()), 0);
        }
        debug_assert_eq!(arena.len(), at);
        abs(base)
    }
}
