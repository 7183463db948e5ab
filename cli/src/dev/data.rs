//! The synthetic demo datasets (docs/design.md section 5): deterministic CSV records with the pilot's
//! searchable fields, written once under `<data-dir>/datasets/<id>/`. Never real people's data.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One demo dataset: its ID and how many records it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoDataset {
    /// Dataset ID.
    pub id: &'static str,
    /// Number of records.
    pub records: u32,
}

/// A site of the demo federation and the datasets it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSite {
    /// Site name.
    pub name: &'static str,
    /// Its datasets.
    pub datasets: &'static [DemoDataset],
}

/// The demo federation, from the platform's 2023 pilot figures (docs/design.md section 5).
pub const FEDERATION: [DemoSite; 3] = [
    DemoSite {
        name: "tohoku",
        datasets: &[
            DemoDataset {
                id: "JGAD000101",
                records: 3_691,
            },
            DemoDataset {
                id: "JGAD000102",
                records: 3_690,
            },
        ],
    },
    DemoSite {
        name: "ncbn",
        datasets: &[DemoDataset {
            id: "JGAD000201",
            records: 9_830,
        }],
    },
    DemoSite {
        name: "bbj",
        datasets: &[DemoDataset {
            id: "JGAD000301",
            records: 6_000,
        }],
    },
];

/// The CSV header.
pub const HEADER: &str = "record_id,age_band,sex,prefecture,icd10";

/// Ten-year age bands.
pub const AGE_BANDS: [&str; 10] = [
    "0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89", "90+",
];

/// Recorded sexes.
pub const SEXES: [&str; 2] = ["female", "male"];

/// Japan's 47 prefectures, north to south.
pub const PREFECTURES: [&str; 47] = [
    "Hokkaido",
    "Aomori",
    "Iwate",
    "Miyagi",
    "Akita",
    "Yamagata",
    "Fukushima",
    "Ibaraki",
    "Tochigi",
    "Gunma",
    "Saitama",
    "Chiba",
    "Tokyo",
    "Kanagawa",
    "Niigata",
    "Toyama",
    "Ishikawa",
    "Fukui",
    "Yamanashi",
    "Nagano",
    "Gifu",
    "Shizuoka",
    "Aichi",
    "Mie",
    "Shiga",
    "Kyoto",
    "Osaka",
    "Hyogo",
    "Nara",
    "Wakayama",
    "Tottori",
    "Shimane",
    "Okayama",
    "Hiroshima",
    "Yamaguchi",
    "Tokushima",
    "Kagawa",
    "Ehime",
    "Kochi",
    "Fukuoka",
    "Saga",
    "Nagasaki",
    "Kumamoto",
    "Oita",
    "Miyazaki",
    "Kagoshima",
    "Okinawa",
];

/// Plausible ICD-10 codes for a biobank cohort.
pub const ICD10: [&str; 24] = [
    "C16.9", // stomach cancer
    "C18.9", // colon cancer
    "C34.9", // lung cancer
    "C50.9", // breast cancer
    "C61",   // prostate cancer
    "E11.9", // type 2 diabetes
    "E78.5", // hyperlipidaemia
    "E66.9", // obesity
    "F32.9", // depressive episode
    "G30.9", // Alzheimer's disease
    "I10",   // essential hypertension
    "I21.9", // acute myocardial infarction
    "I48.9", // atrial fibrillation
    "I50.9", // heart failure
    "I63.9", // cerebral infarction
    "J44.9", // COPD
    "J45.9", // asthma
    "K21.9", // gastro-oesophageal reflux
    "K70.3", // alcoholic cirrhosis
    "K74.6", // other cirrhosis
    "M81.0", // osteoporosis
    "N18.9", // chronic kidney disease
    "L20.9", // atopic dermatitis
    "Z00.0", // general examination, no finding
];

/// The deterministic PRNG the records are drawn from: splitmix64, written out here so the
/// output never depends on another crate's algorithm choices.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (`n > 0`); the modulo bias is irrelevant for demo data.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// FNV-1a of the dataset ID: each dataset gets its own stream.
fn seed_of(id: &str) -> u64 {
    id.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// The CSV text of a dataset: header plus `records` rows, the same bytes on every call.
pub fn generate(id: &str, records: u32) -> String {
    let mut rng = SplitMix64::new(seed_of(id));
    let mut out = String::with_capacity(40 * (records as usize + 1));
    out.push_str(HEADER);
    out.push('\n');
    // Weight ages toward the older bands, as a biobank's participants are.
    const AGE_WEIGHTS: [usize; 10] = [1, 2, 4, 6, 9, 12, 14, 12, 7, 2];
    let total: usize = AGE_WEIGHTS.iter().sum();
    for n in 1..=records {
        let mut pick = rng.below(total);
        let mut band = 0;
        while pick >= AGE_WEIGHTS[band] {
            pick -= AGE_WEIGHTS[band];
            band += 1;
        }
        let sex = SEXES[rng.below(SEXES.len())];
        let pref = PREFECTURES[rng.below(PREFECTURES.len())];
        let code = ICD10[rng.below(ICD10.len())];
        out.push_str(&format!(
            "{id}-{n:06},{},{sex},{pref},{code}\n",
            AGE_BANDS[band]
        ));
    }
    out
}

fn readme(d: &DemoDataset) -> String {
    format!(
        "{id}: SYNTHETIC demo data written by `basho dev`. It describes no real person.\n\
         \n\
         records.csv holds {n} records, generated deterministically from the dataset ID, with the\n\
         searchable clinical fields of the platform's pilot:\n\
         \n\
         record_id   {id}-000001 ... {id}-{n:06}\n\
         age_band    10-year bands, 0-9 ... 90+\n\
         sex         female | male\n\
         prefecture  one of Japan's 47 prefectures\n\
         icd10       an ICD-10 code\n",
        id = d.id,
        n = d.records
    )
}

/// Writes `records.csv` and `README.txt` of `d` under `root/<id>/` unless `records.csv` is
/// already there; returns the dataset directory. Files and directories are world-readable so the
/// workspace user (uid 65534) can read them through the read-only bind mount.
pub fn ensure(root: &Path, d: &DemoDataset) -> std::io::Result<(PathBuf, bool)> {
    let dir = root.join(d.id);
    fs::create_dir_all(&dir)?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    let csv = dir.join("records.csv");
    let created = !csv.exists();
    if created {
        write_readable(&dir.join("README.txt"), readme(d).as_bytes())?;
        write_readable(&csv, generate(d.id, d.records).as_bytes())?;
    }
    Ok((dir, created))
}

/// Writes through a temporary file and a rename, so an interrupted start never leaves half a file
/// that the next start would take for a finished one.
fn write_readable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn federation_matches_the_pilot_figures() {
        let count = |site: &str| -> u32 {
            FEDERATION
                .iter()
                .find(|s| s.name == site)
                .unwrap()
                .datasets
                .iter()
                .map(|d| d.records)
                .sum()
        };
        assert_eq!(count("tohoku"), 7_381);
        assert_eq!(count("ncbn"), 9_830);
        assert_eq!(count("bbj"), 6_000);
    }

    #[test]
    fn splitmix64_matches_its_reference_values() {
        // First outputs for seed 1234567 from the reference implementation (Vigna).
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(r.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn same_bytes_every_time_and_different_per_dataset() {
        let a = generate("JGAD000101", 500);
        assert_eq!(a, generate("JGAD000101", 500));
        let b = generate("JGAD000102", 500);
        assert_ne!(
            a.lines().nth(1).unwrap()[10..],
            b.lines().nth(1).unwrap()[10..]
        );
    }

    #[test]
    fn rows_are_counted_and_every_field_is_valid() {
        let csv = generate("JGAD000301", 6_000);
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some(HEADER));
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len(), 6_000);
        let mut bands = std::collections::BTreeSet::new();
        let mut prefs = std::collections::BTreeSet::new();
        for (i, row) in rows.iter().enumerate() {
            let f: Vec<&str> = row.split(',').collect();
            assert_eq!(f.len(), 5, "{row}");
            assert_eq!(f[0], format!("JGAD000301-{:06}", i + 1));
            assert!(AGE_BANDS.contains(&f[1]), "{row}");
            assert!(SEXES.contains(&f[2]), "{row}");
            assert!(PREFECTURES.contains(&f[3]), "{row}");
            assert!(ICD10.contains(&f[4]), "{row}");
            bands.insert(f[1]);
            prefs.insert(f[3]);
        }
        assert_eq!(bands.len(), AGE_BANDS.len(), "6000 rows cover every band");
        assert_eq!(prefs.len(), 47, "6000 rows cover every prefecture");
    }

    #[test]
    fn ensure_writes_once_and_world_readable() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("datasets");
        let d = DemoDataset {
            id: "JGAD000201",
            records: 9_830,
        };
        let (dir, created) = ensure(&root, &d).unwrap();
        assert!(created);
        let csv = dir.join("records.csv");
        let text = fs::read_to_string(&csv).unwrap();
        assert_eq!(text.lines().count(), 9_831);
        assert!(
            fs::read_to_string(dir.join("README.txt"))
                .unwrap()
                .contains("SYNTHETIC")
        );
        for p in [&root, &dir, &csv] {
            let mode = fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o005,
                if p.is_dir() { 0o005 } else { 0o004 },
                "{p:?}"
            );
        }
        // A second start leaves the file alone (a local edit survives).
        fs::write(&csv, "edited").unwrap();
        let (_, created) = ensure(&root, &d).unwrap();
        assert!(!created);
        assert_eq!(fs::read_to_string(&csv).unwrap(), "edited");
    }
}
