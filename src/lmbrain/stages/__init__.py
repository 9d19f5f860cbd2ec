"""The stage layer: what each workflow rule does, reading settings and paths and writing outputs.

One function per rule; each takes its rule's job-settings object (:mod:`lmbrain.config`, rebuilt from
the rule's ``params``), the paths the rule declares, and writes the rule's outputs atomically. Below
this layer, the science modules take arrays and plain arguments and never see settings or paths.

======================  =============================  ===================================================
rule                    stage function                 science modules
======================  =============================  ===================================================
demo_dataset            data.demo_dataset              demo, topics, corpus, textgrid
data_summary            data.data_summary              datasets
run_config              report.run_config              config
prepare_corpus          models.prepare_corpus          corpus
train_model             models.train_model             training, networks, vocab
pretrained_model        models.pretrained_model        huggingface, networks (planted), topics
extract_features        features.extract_features      features, models
encoding_model          encoding.encoding_model        encoding, stimulus, ridge, stats, plots
trw                     trw.trw                        trw, scrambling, recovery, plots
decoder                 decoding.decoder               decoding (noise, wordrate, proposer, decoder)
decode                  decoding.decode                decoding (beam), evaluation, plots
======================  =============================  ===================================================
"""
