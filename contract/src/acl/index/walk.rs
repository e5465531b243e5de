//! Walking a subject's trie for one request: matches (publish), covers (subscribe, allow),
//! intersects (subscribe, deny).

use super::super::{Effect, Request};
use super::{Matcher, Node, EDGE_BYTES, NONE};

/// One request's walk over the tries.
pub(super) struct Walk<'m, 'r> {
    pub(super) m: &'m Matcher,
    pub(super) req: &'r Request<'r>,
    pub(super) bit: u8,
    /// The topic (or filter) starts with `$`: wildcards at the root cannot match it.
    pub(super) dollar: bool,
}

fn split(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((l, r)) => (l, Some(r)),
        None => (rest, None),
    }
}

impl Walk<'_, '_> {
    fn hit(&self, (at, count): (u32, u32), effect: Effect) -> Option<u32> {
        (0..count as usize)
            .map(|i| self.m.word(at as usize + 4 * i))
            .find(|&o| {
                let o = &self.m.origins[o as usize];
                o.effect == effect && o.admits(self.req.action, self.req.qos, self.req.retain)
            })
    }

    /// Edge `i` of a node: (label bytes, child).
    fn edge(&self, node: &Node, i: usize) -> (&[u8], u32) {
        let at = node.edges as usize + i * EDGE_BYTES;
        let (label, len) = (self.m.word(at) as usize, self.m.word(at + 4) as usize);
        (&self.m.arena[label..label + len], self.m.word(at + 8))
    }

    fn child(&self, node: &Node, level: &str) -> Option<u32> {
        let want = level.as_bytes();
        let n = node.n_edges as usize;
        if n <= 8 {
            return (0..n)
                .map(|i| self.edge(node, i))
                .find(|(l, _)| *l == want)
                .map(|(_, c)| c);
        }
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (l, c) = self.edge(node, mid);
            match l.cmp(want) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(c),
            }
        }
        None
    }

    fn literal_children<'a>(
        &'a self,
        node: &'a Node,
        root: bool,
    ) -> impl Iterator<Item = u32> + 'a {
        (0..node.n_edges as usize)
            .map(move |i| self.edge(node, i))
            .filter(move |(l, _)| !(root && l.first() == Some(&b'$')))
            .map(|(_, c)| c)
    }

    /// PUBLISH: a rule applies when its pattern matches the topic name `rest`.
    pub(super) fn matches(
        &self,
        n: u32,
        rest: Option<&str>,
        root: bool,
        effect: Effect,
    ) -> Option<u32> {
        let node = &self.m.node(n);
        if node.mask(effect) & self.bit == 0 {
            return None;
        }
        let wild = !(root && self.dollar);
        if wild {
            if let Some(o) = self.hit(node.hash(), effect) {
                return Some(o);
            }
        }
        let Some(rest) = rest else {
            return self.hit(node.exact(), effect);
        };
        let (level, next) = split(rest);
        if let Some(c) = self.child(node, level) {
            if let Some(o) = self.matches(c, next, false, effect) {
                return Some(o);
            }
        }
        if wild && node.plus != NONE {
            return self.matches(node.plus, next, false, effect);
        }
        None
    }

    /// SUBSCRIBE, allow rules: the pattern must cover the filter `rest`.
    pub(super) fn covers(&self, n: u32, rest: Option<&str>, root: bool) -> Option<u32> {
        let node = &self.m.node(n);
        if node.allow & self.bit == 0 {
            return None;
        }
        let wild = !(root && self.dollar);
        if wild {
            if let Some(o) = self.hit(node.hash(), Effect::Allow) {
                return Some(o);
            }
        }
        let Some(rest) = rest else {
            return self.hit(node.exact(), Effect::Allow);
        };
        match split(rest) {
            // Only a `/#` pattern (checked above) covers `#`.
            ("#", _) => None,
            // Only `+` covers `+`.
            ("+", next) if node.plus != NONE => self.covers(node.plus, next, false),
            ("+", _) => None,
            (level, next) => {
                if let Some(c) = self.child(node, level) {
                    if let Some(o) = self.covers(c, next, false) {
                        return Some(o);
                    }
                }
                if wild && node.plus != NONE {
                    return self.covers(node.plus, next, false);
                }
                None
            }
        }
    }

    /// SUBSCRIBE, deny rules: the pattern must intersect the filter `rest`.
    pub(super) fn intersects(&self, n: u32, rest: Option<&str>, root: bool) -> Option<u32> {
        let node = &self.m.node(n);
        if node.deny & self.bit == 0 {
            return None;
        }
        let wild = !(root && self.dollar);
        if wild {
            if let Some(o) = self.hit(node.hash(), Effect::Deny) {
                return Some(o);
            }
        }
        let Some(rest) = rest else {
            return self.hit(node.exact(), Effect::Deny);
        };
        match split(rest) {
            // `#` reaches this node's own topic and everything below it.
            ("#", _) => {
                if let Some(o) = self.hit(node.exact(), Effect::Deny) {
                    return Some(o);
                }
                self.below(node, root)
            }
            ("+", next) => {
                for c in self.literal_children(node, root) {
                    if let Some(o) = self.intersects(c, next, false) {
                        return Some(o);
                    }
                }
                if node.plus != NONE {
                    return self.intersects(node.plus, next, false);
                }
                None
            }
            (level, next) => {
                if let Some(c) = self.child(node, level) {
                    if let Some(o) = self.intersects(c, next, false) {
                        return Some(o);
                    }
                }
                if wild && node.plus != NONE {
                    return self.intersects(node.plus, next, false);
                }
                None
            }
        }
    }

    /// Any deny rule in the subtrees below `node` (a filter ending in `#` reaches them all; at
    /// the root, `$` children are out of its reach).
    fn below(&self, node: &Node, root: bool) -> Option<u32> {
        for c in self
            .literal_children(node, root)
            .chain(Some(node.plus).filter(|p| *p != NONE))
        {
            if let Some(o) = self.subtree(c) {
                return Some(o);
            }
        }
        None
    }

    fn subtree(&self, n: u32) -> Option<u32> {
        let node = &self.m.node(n);
        if node.deny & self.bit == 0 {
            return None;
        }
        if let Some(o) = self.hit(node.all_leaves(), Effect::Deny) {
            return Some(o);
        }
        self.below(node, false)
    }
}
