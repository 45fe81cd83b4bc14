//! Plan order, in one place: the resources sorted so that every [`Edge`]
//! runs forward (a conflicting daemon stopped before its replacement's
//! package is installed, a config file before the daemon it restarts, a
//! unit file before systemd's reload, the reload before the unit is
//! enabled and started). Among resources no edge orders, the provider's
//! order stands.

use crate::resource::{Edge, Resource};

/// The resources in an order that respects every edge between them (edges
/// to resources not in the plan are ignored). Errors name a cycle.
pub fn sort(resources: &[Resource]) -> Result<Vec<&Resource>, String> {
    let ids: Vec<_> = resources.iter().map(Resource::id).collect();
    // before[i]: resources that must come before resource i.
    let mut before: Vec<Vec<usize>> = vec![Vec::new(); resources.len()];
    for (to, resource) in resources.iter().enumerate() {
        for Edge { from, .. } in resource.edges() {
            if let Some(from) = ids.iter().position(|i| *i == from) {
                before[to].push(from);
            }
        }
    }
    let mut placed = vec![false; resources.len()];
    let mut order = Vec::with_capacity(resources.len());
    while order.len() < resources.len() {
        // The first resource, in the provider's order, whose predecessors
        // are all placed: stable, so a provider's order that already
        // respects the edges is kept as it is.
        let next = (0..resources.len())
            .find(|&i| !placed[i] && before[i].iter().all(|&b| placed[b]))
            .ok_or_else(|| {
                let left: Vec<String> = (0..resources.len())
                    .filter(|&i| !placed[i])
                    .map(|i| ids[i].to_string())
                    .collect();
                format!(
                    "the resources' edges form a cycle among {}",
                    left.join(", ")
                )
            })?;
        placed[next] = true;
        order.push(&resources[next]);
    }
    Ok(order)
}
