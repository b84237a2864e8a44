//! Dovecot 2.3's dicts: `dict { <name> = <uri> }` blocks, kept as URIs (see
//! [`DictSource::Uri`](super::DictSource::Uri)) and read into a [`DictSpec`](super::DictSpec)
//! when a dict is opened.

use super::{DictEntry, DovecotConfig};
use crate::settings::Node;

impl DovecotConfig {
    /// The entries of one top-level `dict { }` block; a name given again overrides.
    pub(super) fn add_dicts(&mut self, children: &[Node]) {
        for child in children {
            let Node::Setting { key, value, origin } = child else {
                tracing::warn!("{}: ignoring section inside dict {{ }}", child.origin());
                continue;
            };
            let entry = DictEntry::from_uri(key.clone(), value.clone(), origin.clone());
            match self.dicts.iter_mut().find(|d| d.name == *key) {
                Some(old) => {
                    tracing::info!(
                        "{origin}: dict '{key}' overrides the one set at {}",
                        old.origin
                    );
                    *old = entry;
                }
                None => self.dicts.push(entry),
            }
        }
    }
}
