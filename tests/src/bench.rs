//! What the bench binaries (`bench-broker`, `bench-pipeline`) share: their whole-number
//! arguments and the JSON line each figure is printed as.

/// The whole-number arguments of the command line, in order, each defaulting to its entry of
/// `defaults` when absent. An argument that is not a whole number stops the bench with a
/// message naming it (`names` say what each one is).
pub fn numbers<const N: usize>(names: [&str; N], defaults: [u64; N]) -> [u64; N] {
    let mut args = std::env::args().skip(1);
    let mut out = defaults;
    for (i, slot) in out.iter_mut().enumerate() {
        let Some(arg) = args.next() else { break };
        match arg.parse::<u64>() {
            Ok(n) => *slot = n,
            Err(_) => {
                eprintln!(
                    "argument {} ({}) must be a whole number, got {arg:?}",
                    i + 1,
                    names[i]
                );
                std::process::exit(2);
            }
        }
    }
    out
}

/// Prints one figure as a JSON line: `{"figure": figure, ...fields}`.
pub fn line(figure: &str, fields: serde_json::Value) {
    let mut v = serde_json::json!({ "figure": figure });
    if let (Some(o), Some(f)) = (v.as_object_mut(), fields.as_object()) {
        o.extend(f.clone());
    }
    println!("{v}");
}
