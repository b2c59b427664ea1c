//! Several attacks in turn, as AutoAttack's standard version runs them:
//! each attack sees only the points that every earlier one left correctly
//! classified, and a point keeps the first adversarial example that fools
//! the model. A point the model already misclassifies is not attacked.
//!
//! Distance: the members' common norm. Arguments: the members, in order.

use candle_core::Tensor;

use serde::{Deserialize, Serialize};

use super::apgd::on_robust;
use super::misclassified;
use super::spec::{bad, find, names, Budget, Registration};
use super::{project, Attack, Norm, Problem};
use crate::rng::SeededRng;

/// The config section `composite:`: the members, in the order they run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompositeSpec {
    pub attacks: Vec<String>,
}

impl Default for CompositeSpec {
    /// AutoAttack's standard version without FAB and Square.
    fn default() -> Self {
        Self {
            attacks: vec!["apgd-ce".into(), "apgd-t".into()],
        }
    }
}

/// A member runs within the composite's eps, on its own.
fn can_be_member(r: &Registration) -> bool {
    r.budget == Budget::Bounded && !r.needs_objective && r.name != COMPOSITE.name
}

pub const COMPOSITE: Registration = Registration {
    name: "composite",
    summary: "the attacks of `composite.attacks` in turn, each on the points still robust",
    budget: Budget::Bounded,
    norms: &[Norm::Linf, Norm::L2],
    iterative: true,
    needs_objective: false,
    section: Some("composite"),
    check: |spec| {
        let c: CompositeSpec = spec.section("composite")?;
        if c.attacks.is_empty() {
            return Err(bad("composite.attacks", "at least one attack", "an empty list"));
        }
        for name in &c.attacks {
            if !find(name).is_ok_and(can_be_member) {
                return Err(bad(
                    "composite.attacks",
                    &format!("bounded attacks ({})", names(can_be_member)),
                    name,
                ));
            }
        }
        Ok(())
    },
    build: |spec, eps, ctx| {
        let c: CompositeSpec = spec.section("composite")?;
        let members = c
            .attacks
            .iter()
            .map(|name| (find(name)?.build)(spec, eps, ctx))
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(Box::new(Composite::new(members)?))
    },
    examples: &["eps: [0.05]\nsteps: 5\nrestarts: 2\napgd: {target_classes: 3}\ncomposite: {attacks: [fgsm, apgd-ce, apgd-t]}"],
};

pub const AUTOATTACK: Registration = Registration {
    name: "autoattack",
    summary: "AutoAttack's standard version: APGD-CE, APGD-T, FAB-T and Square in turn, each on the points still robust (Croce & Hein)",
    budget: Budget::Bounded,
    norms: &[Norm::Linf],
    iterative: true,
    needs_objective: false,
    section: None,
    check: |_| Ok(()),
    build: |spec, eps, ctx| {
        let members = AUTOATTACK_MEMBERS
            .iter()
            .map(|name| (find(name)?.build)(spec, eps, ctx))
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(Box::new(Composite::new(members)?.named("autoattack")))
    },
    examples: &["eps: [0.3]\nsteps: 5\napgd: {target_classes: 2}\nfab: {target_classes: 2}\nsquare: {queries: 30}"],
};

/// AutoAttack's standard version, in its order.
pub const AUTOATTACK_MEMBERS: [&str; 4] = ["apgd-ce", "apgd-t", "fab-t", "square"];

pub struct Composite {
    name: &'static str,
    members: Vec<Box<dyn Attack>>,
}

impl Composite {
    /// Refuses an empty list, a minimum-norm member (it has no eps to
    /// share) and members of different norms.
    pub fn new(members: Vec<Box<dyn Attack>>) -> crate::Result<Self> {
        let first = members.first().ok_or_else(|| {
            crate::Error::field("composite.attacks", "at least one attack", "none")
        })?;
        let norm = first.norm();
        for m in &members {
            if m.minimum_norm() {
                return Err(crate::Error::field(
                    "composite.attacks",
                    "bounded attacks (they share one eps)",
                    format!("{}, a minimum-norm attack", m.name()),
                ));
            }
            if m.norm() != norm {
                return Err(crate::Error::field(
                    "composite.attacks",
                    format!(
                        "members of one norm ({} attacks in {})",
                        first.name(),
                        norm.name()
                    ),
                    format!("{} in {}", m.name(), m.norm().name()),
                ));
            }
        }
        Ok(Self {
            name: "composite",
            members,
        })
    }

    /// The same composite under another name (its random stream's too).
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    pub fn members(&self) -> impl Iterator<Item = &dyn Attack> {
        self.members.iter().map(|m| m.as_ref())
    }
}

impl Attack for Composite {
    fn name(&self) -> &'static str {
        self.name
    }

    fn settings(&self) -> Option<String> {
        Some(
            self.members
                .iter()
                .map(|m| m.settings().unwrap_or_else(|| m.name().to_string()))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    fn norm(&self) -> Norm {
        self.members[0].norm()
    }

    fn propose(&self, p: &Problem, rng: &mut SeededRng) -> crate::Result<Tensor> {
        Ok(self.propose_attributed(p, rng)?.0)
    }

    fn propose_attributed(
        &self,
        p: &Problem,
        rng: &mut SeededRng,
    ) -> crate::Result<(Tensor, Option<Vec<String>>)> {
        let Problem { model, x, y, eps } = *p;
        let norm = self.norm();
        let mut best = x.clone();
        // A point misclassified clean is not robust, and no member's.
        let mut by: Vec<String> = misclassified(model, x, y)?
            .to_vec1::<u8>()?
            .into_iter()
            .map(|f| {
                if f == 1 {
                    "clean".into()
                } else {
                    String::new()
                }
            })
            .collect();
        for member in &self.members {
            // Each member's proposal is projected before it is judged, so a
            // point counts as fooled only within the budget.
            best = on_robust(model, x, y, &best, &mut |xs, ys, _| {
                project(xs, &member.propose(&p.on(xs, ys), rng)?, eps, norm).map_err(Into::into)
            })?;
            let fooled = misclassified(model, &best, y)?.to_vec1::<u8>()?;
            for (b, f) in by.iter_mut().zip(fooled) {
                if f == 1 && b.is_empty() {
                    *b = member.name().into();
                }
            }
        }
        Ok((best, Some(by)))
    }
}
