"""The `--model_id` table of `test_demo.py` (NTIRE convention: 0 is the baseline).

Each id names a label and the checkpoint file names it may have in the model-zoo
folder (`model_zoo/` by default, or `--model_zoo DIR`, e.g. ../shared/pretrained).
"""

MODEL_ZOO = {
    0: ('RFDN', ('team00_RFDN.pth', 'rfdn_baseline.pth')),         # NTIRE 2022/2023 baseline
    1: ('PRFDN', ('team01_PRFDN.pth',)),                             # this repository's method
    2: ('CLB-IMDN', ('team01_CLBIMDN.pth',)),                       # CLB (Wang et al.), collapsed
    3: ('RLFN-KP', ('team01_RLFNKP.pth',)),                         # kernel/bias-pruned RLFN (AdvancedSR)
    4: ('FMP-RFDN', ('team01_FMPRFDN.pth',)),                       # FMP, Total Fixed criterion
    5: ('RFDN-CP', ('team01_RFDNCP.pth',)),                         # RFDN channel-pruned, widths of 8
    10: ('IMDN', ('imdn_baseline.pth',)),                            # NTIRE 2022 baseline
    11: ('RLFN (NTIRE 2022)', ('team04_rlfn.pth',)),
    12: ('RLFN (NTIRE 2024 baseline)', ('team00_rlfn.pth',)),
    13: ('AdvancedSR', ('team17_AdvancedSR.pth',)),
}
