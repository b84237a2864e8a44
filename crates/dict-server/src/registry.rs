//! The configured dicts by name: what the hello's dict name selects.

use std::collections::HashMap;
use std::sync::Arc;

use dict_backend::Dict;

/// One configured dict, shared by every connection that names it.
#[derive(Clone)]
pub struct DictHandle {
    /// The name clients send in the hello.
    pub name: Arc<str>,
    /// The backend.
    pub dict: Arc<dyn Dict>,
}

/// Dict name → dict.
#[derive(Clone, Default)]
pub struct Registry {
    dicts: HashMap<Vec<u8>, DictHandle>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the dict called `name`.
    pub fn insert(&mut self, name: &str, dict: Arc<dyn Dict>) {
        self.dicts.insert(
            name.as_bytes().to_vec(),
            DictHandle {
                name: name.into(),
                dict,
            },
        );
    }

    /// The dict a hello names, by exact byte comparison as Dovecot does.
    pub fn get(&self, name: &[u8]) -> Option<&DictHandle> {
        self.dicts.get(name)
    }

    /// The configured names, sorted.
    pub fn names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<_> = self.dicts.values().map(|h| h.name.clone()).collect();
        names.sort();
        names
    }

    /// True when no dict is configured.
    pub fn is_empty(&self) -> bool {
        self.dicts.is_empty()
    }
}
