//! Labels from the stack itself: the automatic `endpoint` label of web handlers (endpoint.rs), the user's rules
//! (`--labels FILE`, rules.rs), and a bound on how many values each may have (cardinality.rs).
//!
//! The pipeline hands every stack it builds (CPU samples, off-CPU captures, threads blocked throughout) to one
//! [`Labeler`], so the labels are the same in every profile and output. A rule's label wins over the automatic
//! one for the same key: the file is the user's own word.
mod cardinality;
pub(crate) mod endpoint;
mod rules;

use std::sync::Arc;

use self::cardinality::CardinalityGuard;
pub(crate) use self::cardinality::DEFAULT_MAX_VALUES;
pub(crate) use self::endpoint::ENDPOINT;
pub(crate) use self::rules::Rules;
use crate::aggregate::{Frame, Label, LabelValue};

/// How stacks are labelled, as the command line asked.
#[derive(Clone, Debug)]
pub(crate) struct LabelConfig {
    pub rules: Arc<Rules>,
    /// Distinct values kept per label key (`--max-label-values`).
    pub max_values: usize,
}

impl Default for LabelConfig {
    fn default() -> Self {
        Self { rules: Arc::default(), max_values: DEFAULT_MAX_VALUES }
    }
}

/// Gives stacks their labels; one per pipeline, as it remembers the values each key has had.
#[derive(Debug, Default)]
pub(crate) struct Labeler {
    rules: Arc<Rules>,
    guard: CardinalityGuard,
}

impl Labeler {
    pub(crate) fn new(config: &LabelConfig) -> Self {
        Self { rules: config.rules.clone(), guard: CardinalityGuard::new(config.max_values) }
    }

    /// The labels of a stack (leaf first): the rules', then the automatic `endpoint` unless a rule set it.
    pub(crate) fn labels_of(&mut self, frames: &[Frame]) -> Vec<Label> {
        let mut found = self.rules.labels_of(frames);
        if !found.iter().any(|(key, _)| *key == endpoint::ENDPOINT) {
            found.extend(endpoint::handler_of(frames).map(|handler| (endpoint::ENDPOINT, handler)));
        }
        found
            .into_iter()
            .map(|(key, value)| Label { key, value: LabelValue::Str(self.guard.admit(key, value)) })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(function: &str, file: &str) -> Frame {
        Frame::python(function, file)
    }

    fn label(key: &'static str, value: &str) -> Label {
        Label { key, value: LabelValue::Str(value.into()) }
    }

    fn handler_stack(handler: &str) -> Vec<Frame> {
        vec![
            py(handler, "/srv/app/app.py"),
            py("WorkerThread.run", "/srv/venv/lib/python3.11/site-packages/anyio/_backends/_asyncio.py"),
        ]
    }

    #[test]
    fn the_automatic_endpoint_unless_a_rule_sets_it() {
        let mut labeler = Labeler::default();
        assert_eq!(labeler.labels_of(&handler_stack("earthquakes")), [label("endpoint", "earthquakes")]);
        assert!(labeler.labels_of(&[py("refresh", "/srv/app/app.py")]).is_empty());

        let rules = Rules::parse(
            "[[rule]]\nfunction = \"earthquakes\"\nlabels = { endpoint = \"quakes\", data_source = \"feed\" }\n",
        )
        .unwrap();
        let mut labeler = Labeler::new(&LabelConfig { rules: Arc::new(rules), max_values: 10 });
        assert_eq!(
            labeler.labels_of(&handler_stack("earthquakes")),
            [label("data_source", "feed"), label("endpoint", "quakes")]
        );
        assert_eq!(labeler.labels_of(&handler_stack("weather")), [label("endpoint", "weather")]);
    }

    #[test]
    fn endpoints_past_the_limit_are_other() {
        let mut labeler = Labeler::new(&LabelConfig { max_values: 2, ..LabelConfig::default() });
        let endpoints: Vec<Vec<Label>> =
            ["a", "b", "c", "a"].iter().map(|handler| labeler.labels_of(&handler_stack(handler))).collect();
        assert_eq!(
            endpoints,
            [
                vec![label("endpoint", "a")],
                vec![label("endpoint", "b")],
                vec![label("endpoint", "other")],
                vec![label("endpoint", "a")]
            ]
        );
    }
}
