{#- amount_paid per order = sum of paid(charge) over the charges whose metadata.order_id is that
    order; paid(charge) = amount - amount_refunded for succeeded charges, else 0 (contract). -#}
select
    order_id,
    count(*) as charge_count,
    {{ sum_money(charge_paid_amount('status', 'amount', 'amount_refunded')) }} as amount_paid,
    max(_loaded_at) as _loaded_at
from {{ ref('stg_stripe_charges') }}
where order_id is not null
group by order_id
