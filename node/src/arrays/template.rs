//! Turning an array's template into each item's job and its items'
//! results into the reduce job's inputs. Pure: no store, no network.

use std::collections::BTreeMap;

use agora_protocol::limits::MAX_INPUTS;

use super::record::{ItemInput, ItemResult};
use crate::api::types::SubmitJob;

/// `{}` becomes `value` and `{#}` becomes `index`, in one pass, so a
/// value that itself contains `{#}` is kept as it is.
pub fn fill(s: &str, value: &str, index: u32) -> String {
    let mut out = String::with_capacity(s.len() + value.len());
    let mut rest = s;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{}") {
            out.push_str(value);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{#}") {
            out.push_str(&index.to_string());
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The job of item `index`: the template with `{}` and `{#}` filled in in
/// its arguments and environment values, and the item's file among its
/// inputs.
pub fn item_job(template: &SubmitJob, input: &ItemInput, index: u32) -> SubmitJob {
    let value = input.value();
    let mut job = template.clone();
    job.args = template
        .args
        .iter()
        .map(|a| fill(a, &value, index))
        .collect();
    job.env = template
        .env
        .iter()
        .map(|(k, v)| (k.clone(), fill(v, &value, index)))
        .collect();
    if let ItemInput::File { name, blob } = input {
        job.inputs.insert(name.clone(), blob.to_hex());
    }
    job
}

/// Inputs the reduce job gets per item: its stdout and each output.
pub fn reduce_inputs_per_item(template: &SubmitJob) -> usize {
    1 + template.outputs.len()
}

/// Most items an array with a reduce step may have (every item's stdout
/// and outputs become inputs of one job, which is bounded).
pub fn max_reduce_items(template: &SubmitJob) -> usize {
    MAX_INPUTS / reduce_inputs_per_item(template)
}

/// The reduce job: the reduce template with item i's stdout at
/// `/in/<i>.out` and its output `P` at `/in/<i>/P`.
pub fn reduce_job<'a>(
    reduce: &SubmitJob,
    items: impl IntoIterator<Item = (u32, &'a ItemResult)>,
) -> SubmitJob {
    let mut job = reduce.clone();
    let mut inputs = BTreeMap::new();
    for (index, r) in items {
        inputs.insert(format!("{index}.out"), r.stdout.id.to_hex());
        for (name, blob) in &r.outputs {
            inputs.insert(format!("{index}/{name}"), blob.id.to_hex());
        }
    }
    job.inputs = inputs;
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::SubmitExecutor;
    use crate::jobs::record::StoredBlob;
    use agora_protocol::ContentId;

    #[test]
    fn placeholders_are_filled_once_and_others_kept() {
        assert_eq!(fill("{}", "7", 3), "7");
        assert_eq!(fill("n={} i={#}", "7", 3), "n=7 i=3");
        assert_eq!(fill("{}{}{#}{#}", "a", 1), "aa11");
        assert_eq!(fill("{x} {", "v", 0), "{x} {");
        assert_eq!(fill("{{}}", "v", 0), "{v}");
        // A value holding a placeholder is not filled again.
        assert_eq!(fill("{} {#}", "{#}", 5), "{#} 5");
        assert_eq!(fill("plain", "v", 0), "plain");
        assert_eq!(fill("é{}ü", "ß", 0), "éßü");
    }

    #[test]
    fn an_item_job_fills_args_and_env_and_sees_its_file() {
        let mut t = SubmitJob::new(SubmitExecutor::Wasm { module: "m".into() });
        t.args = vec!["{}".into(), "--index={#}".into()];
        t.env.insert("ITEM".into(), "{}".into());
        t.inputs.insert("common".into(), "c".into());
        let blob = ContentId::of(b"x");
        let j = item_job(
            &t,
            &ItemInput::File {
                name: "a.txt".into(),
                blob,
            },
            4,
        );
        assert_eq!(j.args, vec!["/in/a.txt", "--index=4"]);
        assert_eq!(j.env["ITEM"], "/in/a.txt");
        assert_eq!(j.inputs["a.txt"], blob.to_hex());
        assert_eq!(j.inputs["common"], "c");
        let j = item_job(&t, &ItemInput::Int(-2), 0);
        assert_eq!(j.args, vec!["-2", "--index=0"]);
        assert_eq!(j.inputs.len(), 1);
    }

    #[test]
    fn the_reduce_job_sees_each_stdout_and_output_by_index() {
        let blob = |s: &[u8]| StoredBlob {
            id: ContentId::of(s),
            size: s.len() as u64,
        };
        let r0 = ItemResult {
            exit_code: 0,
            stdout: blob(b"0"),
            outputs: BTreeMap::from([("res/a".to_string(), blob(b"a"))]),
        };
        let r7 = ItemResult {
            exit_code: 0,
            stdout: blob(b"7"),
            outputs: BTreeMap::new(),
        };
        let mut t = SubmitJob::new(SubmitExecutor::Wasm { module: "r".into() });
        t.inputs.insert("stale".into(), "x".into());
        let j = reduce_job(&t, [(0, &r0), (7, &r7)]);
        let names: Vec<&str> = j.inputs.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["0.out", "0/res/a", "7.out"]);
        assert_eq!(j.inputs["7.out"], ContentId::of(b"7").to_hex());
    }

    #[test]
    fn a_reduce_takes_fewer_items_when_each_brings_outputs() {
        let mut t = SubmitJob::new(SubmitExecutor::Wasm { module: "m".into() });
        assert_eq!(max_reduce_items(&t), MAX_INPUTS);
        t.outputs = vec!["a".into(), "b".into(), "c".into()];
        assert_eq!(max_reduce_items(&t), MAX_INPUTS / 4);
    }
}
