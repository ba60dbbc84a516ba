/*!
`explain --baseline`: which baseline each model input gets. The flag may be repeated, each value
`[NAME=]zeros|mean|FILE.npy`, the way `--input` takes several inputs:

- `NAME=SPEC` sets input NAME's baseline (NAME as the model names its `Input` layers);
- one value without a name is the default of every input not named (a FILE only when the model has one
  input: with several it would be ambiguous); inputs neither named nor defaulted get `zeros`.

Only the arguments are checked here (names against the model's inputs, each input at most once); the
baseline arrays themselves are built against each input's shape by [`super::explain::baseline`] and the
token baseline of [`super::explain_model`], whose messages carry [`Choice::flag`].
*/

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// One input's baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Zeros (a token input: the id 0, the padding row of its embedding).
    Zeros,
    /// Each feature's mean over the unmasked steps of all sequences (tokens: the mean embedding row).
    Mean,
    /// A `.npy` file.
    File(PathBuf),
}

impl Kind {
    fn parse(s: &str) -> Kind {
        match s {
            "zeros" => Kind::Zeros,
            "mean" => Kind::Mean,
            f => Kind::File(PathBuf::from(f)),
        }
    }

    /// The file, if any.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Kind::File(p) => Some(p),
            _ => None,
        }
    }
}

/// The baseline chosen for one input, with the flag text that chose it (for messages).
#[derive(Debug, Clone)]
pub struct Choice {
    /// What the baseline is.
    pub kind: Kind,
    /// `--baseline VALUE` as given, or `--baseline zeros (default)`.
    pub flag: String,
}

/// Every path a `--baseline` value may name (for the check that no output overwrites an input): the
/// value itself and, for `NAME=FILE`, the part after the first `=`.
pub fn candidate_files(values: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for v in values {
        if v == "zeros" || v == "mean" {
            continue;
        }
        out.push(PathBuf::from(v));
        if let Some((_, rest)) = v.split_once('=')
            && rest != "zeros"
            && rest != "mean"
        {
            out.push(PathBuf::from(rest));
        }
    }
    out
}

/// `names`: the model's inputs in order (empty: one unnamed input, e.g. one layer's `--weights`);
/// `held`: per input, whether it is read only as a mask (its baseline is itself: naming it is refused).
/// Returns one choice per input (one for an unnamed input).
pub fn resolve(values: &[String], names: &[String], held: &[bool]) -> Result<Vec<Choice>> {
    let n = names.len().max(1);
    let list = if names.is_empty() {
        "it has one unnamed input".to_string()
    } else {
        format!("its inputs: {}", names.join(", "))
    };
    let mut named: Vec<Option<Choice>> = vec![None; n];
    let mut default: Option<Choice> = None;
    for v in values {
        let flag = format!("--baseline {v}");
        let split = v
            .split_once('=')
            .filter(|(name, _)| names.iter().any(|m| m == name));
        match split {
            Some((name, rest)) => {
                let at = names.iter().position(|m| m == name).expect("filtered");
                if rest.is_empty() {
                    return Err(Error::usage(format!(
                        "{flag}: no baseline after '{name}='; give {name}=zeros, {name}=mean or {name}=FILE.npy"
                    )));
                }
                if held.get(at).copied().unwrap_or(false) {
                    return Err(Error::usage(format!(
                        "{flag}: input '{name}' is read only as a mask (a selector, held at its value on every path): it has no baseline to set; name one of the other inputs ({list})"
                    )));
                }
                if let Some(first) = &named[at] {
                    return Err(Error::usage(format!(
                        "{flag}: input '{name}' already has {}; give each input one baseline",
                        first.flag
                    )));
                }
                named[at] = Some(Choice {
                    kind: Kind::parse(rest),
                    flag,
                });
            }
            None => {
                // `NAME=…` whose NAME is no input, unless the whole value is a file that exists.
                if let Some((name, _)) = v.split_once('=')
                    && !name.is_empty()
                    && !name.contains(['/', '\\'])
                    && !Path::new(v).exists()
                {
                    return Err(Error::usage(if names.is_empty() {
                        format!(
                            "{flag}: names an input '{name}', but {list}: give --baseline zeros, mean or FILE.npy"
                        )
                    } else {
                        format!(
                            "{flag}: the model has no input '{name}' ({list}); give --baseline NAME=zeros|mean|FILE.npy"
                        )
                    }));
                }
                if let Some(first) = &default {
                    return Err(Error::usage(format!(
                        "{flag}: {} already gives the baseline of the inputs not named; {}",
                        first.flag,
                        if names.len() > 1 {
                            format!("name the input each is for: --baseline NAME=… ({list})")
                        } else {
                            "give it once".to_string()
                        }
                    )));
                }
                let kind = Kind::parse(v);
                if names.len() > 1 && kind.file().is_some() {
                    return Err(Error::usage(format!(
                        "{flag}: the model has {} inputs ({}); say which one the file is for: --baseline NAME={v} (unnamed, only zeros or mean apply to every input)",
                        names.len(),
                        names.join(", ")
                    )));
                }
                default = Some(Choice { kind, flag });
            }
        }
    }
    Ok(named
        .into_iter()
        .map(|c| {
            c.or_else(|| default.clone()).unwrap_or(Choice {
                kind: Kind::Zeros,
                flag: "--baseline zeros (default)".into(),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["series".into(), "static".into()]
    }

    fn kinds(v: &[&str]) -> Result<Vec<Kind>> {
        let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        Ok(resolve(&v, &names(), &[false, false])?
            .into_iter()
            .map(|c| c.kind)
            .collect())
    }

    #[test]
    fn named_default_and_zeros() {
        assert_eq!(kinds(&[]).unwrap(), vec![Kind::Zeros, Kind::Zeros]);
        assert_eq!(kinds(&["mean"]).unwrap(), vec![Kind::Mean, Kind::Mean]);
        assert_eq!(
            kinds(&["series=b.npy"]).unwrap(),
            vec![Kind::File("b.npy".into()), Kind::Zeros]
        );
        assert_eq!(
            kinds(&["mean", "static=zeros"]).unwrap(),
            vec![Kind::Mean, Kind::Zeros]
        );
    }

    #[test]
    fn ambiguous_or_unknown_is_refused() {
        let e = kinds(&["b.npy"]).unwrap_err().to_string();
        assert!(
            e.contains("NAME=b.npy") && e.contains("series, static"),
            "{e}"
        );
        let e = kinds(&["other=b.npy"]).unwrap_err().to_string();
        assert!(e.contains("no input 'other'"), "{e}");
        let e = kinds(&["series=a.npy", "series=mean"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("already has --baseline series=a.npy"), "{e}");
        let e = kinds(&["zeros", "mean"]).unwrap_err().to_string();
        assert!(e.contains("already gives"), "{e}");
        let v = vec!["static=mean".to_string()];
        let e = resolve(&v, &names(), &[false, true])
            .unwrap_err()
            .to_string();
        assert!(e.contains("read only as a mask"), "{e}");
    }

    #[test]
    fn one_unnamed_input_takes_a_file() {
        let v = vec!["b.npy".to_string()];
        let c = resolve(&v, &[], &[]).unwrap();
        assert_eq!(c[0].kind, Kind::File("b.npy".into()));
        let v = vec!["x=b.npy".to_string()];
        assert!(resolve(&v, &[], &[]).is_err());
    }
}
