//! The resources of a set of definitions or a test context: one shared value per type.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A resource with the name of its type.
type NamedResource = (&'static str, Arc<dyn Any + Send + Sync>);

/// The resources assets can take as `Res<R>`, one value per type. Cheap to clone.
#[derive(Clone, Default)]
pub struct Resources(Arc<HashMap<TypeId, NamedResource>>);

impl Resources {
    pub(crate) fn insert<R: Send + Sync + 'static>(&mut self, resource: R) {
        Arc::make_mut(&mut self.0).insert(
            TypeId::of::<R>(),
            (std::any::type_name::<R>(), Arc::new(resource)),
        );
    }

    pub(crate) fn contains(&self, id: TypeId) -> bool {
        self.0.contains_key(&id)
    }

    /// The names of the resource types held.
    pub fn type_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.values().map(|(name, _)| *name)
    }

    /// The resource of type `R`, if one is held.
    pub fn get<R: Send + Sync + 'static>(&self) -> Option<Arc<R>> {
        let (_, value) = self.0.get(&TypeId::of::<R>())?;
        Arc::clone(value).downcast::<R>().ok()
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.type_names()).finish()
    }
}
