//! Several attacks in turn, as AutoAttack's standard version runs them:
//! each attack sees only the points that every earlier one left correctly
//! classified, and a point keeps the first adversarial example that fools
//! the model. A point the model already misclassifies is not attacked.
//!
//! Distance: the members' common norm. Arguments: the members, in order.

use candle_core::Tensor;

use super::apgd::on_robust;
use super::{project, Attack, Logits, Norm};
use crate::rng::SeededRng;

pub struct Composite {
    members: Vec<Box<dyn Attack>>,
}

impl Composite {
    /// Refuses an empty list, a minimum-norm member (it has no eps to
    /// share) and members of different norms.
    pub fn new(members: Vec<Box<dyn Attack>>) -> crate::Result<Self> {
        let first = members
            .first()
            .ok_or_else(|| crate::Error::Invalid("composite: no attacks given".into()))?;
        let norm = first.norm();
        for m in &members {
            if m.minimum_norm() {
                return Err(crate::Error::Invalid(format!(
                    "composite: {} is a minimum-norm attack; only bounded attacks share one eps",
                    m.name()
                )));
            }
            if m.norm() != norm {
                return Err(crate::Error::Invalid(format!(
                    "composite: {} attacks in {:?}, {} in {:?}; the members must share one norm",
                    first.name(),
                    norm,
                    m.name(),
                    m.norm()
                )));
            }
        }
        Ok(Self { members })
    }

    pub fn members(&self) -> impl Iterator<Item = &dyn Attack> {
        self.members.iter().map(|m| m.as_ref())
    }
}

impl Attack for Composite {
    fn name(&self) -> &'static str {
        "composite"
    }

    fn norm(&self) -> Norm {
        self.members[0].norm()
    }

    fn propose(
        &self,
        model: &dyn Logits,
        x: &Tensor,
        y: &Tensor,
        eps: f64,
        rng: &mut SeededRng,
    ) -> candle_core::Result<Tensor> {
        let norm = self.norm();
        let mut best = x.clone();
        for member in &self.members {
            // Each member's proposal is projected before it is judged, so a
            // point counts as fooled only within the budget.
            best = on_robust(model, x, y, &best, &mut |xs, ys, _| {
                project(xs, &member.propose(model, xs, ys, eps, rng)?, eps, norm)
            })?;
        }
        Ok(best)
    }
}
